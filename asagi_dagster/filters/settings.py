"""The filter stage's settings (the profile's ``filters``): image safety limits, the pair
rules (``asagi_dagster.pair_rules``), dedup, benchmark decontamination and the document
image filter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializeAsAny, field_validator

from asagi_dagster.pair_rules import RuleSettings, rule_settings
from asagi_dagster.settings import LocalPath, Strict


class ImageSafetySettings(Strict):
    """Limits that keep untrusted image bytes from hurting the process; not optional."""

    max_pixels: int = Field(50_000_000, gt=0, description="Width x height from the header above this: a decompression bomb.")
    formats: list[str] = Field(["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"], description="Pillow format names accepted.")
    # 128 keeps the perceptual hash stable (it reads 32x32) and lets JPEG decode at 1/8 scale.
    thumbnail_side: int = Field(128, ge=32, description="Images are decoded at about this size for the pixel rules and hashes.")


class DedupSettings(Strict):
    max_hamming: int = Field(4, ge=0, le=16, description="Perceptual hashes this close (in bits of 64) are near duplicates.")


class BenchmarkImages(Strict):
    """Where the images of a benchmark the profile does not evaluate are (an evaluated
    benchmark's come from its items)."""

    images: LocalPath | None = Field(None, description="A folder of image files, or a Parquet file with an image column.")
    vg_image_ids: LocalPath | None = Field(None, description="A text file of Visual Genome image ids, one per line.")


class DecontaminationSettings(Strict):
    max_hamming: int = Field(8, ge=0, le=24, description="Training images this close to a benchmark image are removed.")
    benchmarks: dict[str, BenchmarkImages] = Field(
        {}, description="Benchmarks not under evaluation.benchmarks whose images training must not contain, by path."
    )


class DocumentFilterSettings(Strict):
    """Drop images too similar to document images (infographics, charts, diagrams)."""

    enabled: bool = True
    encoder_role: str = Field("document_encoder", description="The models entry that embeds images (CLIP/SigLIP id, or builtin:pixel-stats).")
    reference_images: LocalPath | None = Field(None, description="A folder of document images (the papers used InfographicVQA, DVQA, AI2D).")
    method: Literal["centroid", "knn"] = "knn"
    k: int = Field(3, ge=1, description="knn: similarity is the mean over the k most similar references.")
    # Calibrated for builtin:pixel-stats on scikit-image's documents and photos; a real
    # encoder needs its own (see docs/decisions.md).
    threshold: float = Field(0.85, ge=-1, le=1, description="Cosine similarity at or above this drops the image.")
    batch_size: int = Field(32, ge=1)
    allow_hub: bool = Field(False, description="Let the encoder download from the Hugging Face hub (cluster only).")


class FilterSettings(Strict):
    caption_fields: list[Literal["alt", "figcaption", "title"]] = Field(
        ["alt", "figcaption", "title"], min_length=1, description="A web pair's text: the first of these it has."
    )
    image_safety: ImageSafetySettings = ImageSafetySettings()
    rules: dict[str, SerializeAsAny[RuleSettings]] = Field(
        default_factory=lambda: rule_settings({}),
        description="By rule name (asagi_dagster/pair_rules/): the rule's settings laid over its defaults. Each rule's name is its rejection reason.",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _registered_rules(cls, raw: object) -> object:
        return rule_settings(raw) if isinstance(raw, dict) else raw

    def with_rule_overrides(self, overrides: dict[str, dict]) -> FilterSettings:
        """These settings with one source's rule overrides merged in, validated (an unknown rule is refused)."""
        merged = {name: settings.model_dump() for name, settings in self.rules.items()}
        for name, values in overrides.items():
            merged[name] = {**merged.get(name, {}), **values}
        return self.model_copy(update={"rules": rule_settings(merged)})

    dedup: DedupSettings = DedupSettings()
    decontamination: DecontaminationSettings = DecontaminationSettings()
    document_filter: DocumentFilterSettings = DocumentFilterSettings()
