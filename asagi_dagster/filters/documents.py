"""The document-image filter: images too similar to document images (infographics,
charts, diagrams) are dropped, by cosine similarity of their embeddings to a
reference set's (its centroid, or the mean of the k most similar references)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from asagi_dagster.core import Rejected
from asagi_dagster.filters.decontam import IMAGE_SUFFIXES
from asagi_dagster.filters.encoders import ImageEncoder, load_image_encoder
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.settings import DocumentFilterSettings, ImageSafetySettings
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.settings import ConfigError

REFERENCE_VERSION = 1
REFERENCE_SCHEMA = pa.schema([("record_id", pa.string()), ("encoder", pa.string()), ("embedding", pa.list_(pa.float32()))])


def document_encoder(settings: DocumentFilterSettings, models: dict[str, ModelRef]) -> ImageEncoder:
    model = models.get(settings.encoder_role)
    if model is None:
        raise ConfigError(
            f"models.{settings.encoder_role} is not set: filters.document_filter needs an image encoder (a CLIP/SigLIP id, or builtin:pixel-stats)"
        )
    return load_image_encoder(model, allow_hub=settings.allow_hub)


def reference_rows(settings: DocumentFilterSettings, encoder: ImageEncoder, safety: ImageSafetySettings) -> Iterator[tuple[str, dict | Rejected]]:
    """(record id, reference row) per image file in the reference folder."""
    folder = Path(settings.reference_images or "")
    if not settings.reference_images or not folder.is_dir():
        raise ConfigError(f"filters.document_filter.reference_images: no folder of document images at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for start in range(0, len(files), settings.batch_size):
        batch, ids = [], []
        for file in files[start : start + settings.batch_size]:
            record_id = file.relative_to(folder).as_posix()
            try:
                batch.append(small_image(file.read_bytes(), encoder.input_side, safety))
                ids.append(record_id)
            except Rejected as rejected:
                yield record_id, rejected
        if batch:
            for record_id, vector in zip(ids, encoder.embed(batch)):
                yield record_id, {"record_id": record_id, "encoder": encoder.name, "embedding": vector.tolist()}


@dataclass
class DocumentScorer:
    """Cosine similarity of unit embeddings to the reference set."""

    references: np.ndarray  # (n, dim), unit rows
    method: str = "centroid"
    k: int = 3

    def __post_init__(self) -> None:
        if len(self.references) == 0:
            raise ValueError("the document reference set is empty")
        centroid = self.references.mean(axis=0)
        self.centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        if self.method == "centroid":
            return embeddings @ self.centroid
        similarities = embeddings @ self.references.T
        k = min(self.k, similarities.shape[1])
        return np.sort(similarities, axis=1)[:, -k:].mean(axis=1)


@dataclass
class DocumentCheck:
    """What filtered_pairs needs to apply the filter: the encoder, the scorer, the limits."""

    encoder: ImageEncoder
    scorer: DocumentScorer
    threshold: float
    batch_size: int
    safety: ImageSafetySettings

    def problems(self, images: list[Image.Image]) -> list[str | None]:
        scores = self.scorer.scores(self.encoder.embed(images))
        return [f"similarity {score:.3f} >= {self.threshold} to document images" if score >= self.threshold else None for score in scores]
