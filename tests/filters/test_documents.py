"""The document-image filter on real images: scikit-image's scanned page and text photo
and rendered pages, charts and diagrams are documents; its photos are not. And the
Hugging Face encoder path with a tiny SigLIP built here (random weights)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from asagi_dagster.core import Rejected
from asagi_dagster.filters.documents import DocumentScorer, reference_rows
from asagi_dagster.filters.encoders import BUILTIN_PIXEL_STATS, PixelStatsEncoder, load_image_encoder
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.settings import DocumentFilterSettings, ImageSafetySettings
from asagi_dagster.models.settings import ModelRef
from asagi_sample.documents import bar_chart, flow_diagram, reference_documents, text_page

SETTINGS = DocumentFilterSettings()
SAFETY = ImageSafetySettings()


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def skimage(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)())


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("document_reference")
    for name, image in reference_documents().items():
        image.save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


def score(folder, settings: DocumentFilterSettings, images: dict[str, bytes]) -> dict[str, float]:
    encoder = PixelStatsEncoder()
    rows = [row for _, row in reference_rows(settings.model_copy(update={"reference_images": str(folder)}), encoder, SAFETY) if isinstance(row, dict)]
    scorer = DocumentScorer(np.array([r["embedding"] for r in rows], dtype=np.float32), settings.method, settings.k)
    smalls = [small_image(data, encoder.input_side, SAFETY) for data in images.values()]
    return dict(zip(images, scorer.scores(encoder.embed(smalls)).tolist()))


DOCUMENTS = {
    "text.png (photo of handwriting on paper)": lambda: jpeg(skimage("text")),
    "page.png (scanned page) as JPEG": lambda: jpeg(skimage("page")),
    "rendered text page": lambda: jpeg(text_page(41)),
    "bar chart": lambda: jpeg(bar_chart(42)),
    "flow diagram": lambda: jpeg(flow_diagram(43)),
}
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field", "retina", "cat", "immunohistochemistry"]


def test_documents_pass_the_threshold_and_photos_do_not(reference_folder):
    scores = score(reference_folder, SETTINGS, {**{k: v() for k, v in DOCUMENTS.items()}, **{p: jpeg(skimage(p)) for p in PHOTOS}})
    documents = {k: scores[k] for k in DOCUMENTS}
    photos = {k: scores[k] for k in PHOTOS}
    assert min(documents.values()) >= SETTINGS.threshold, documents
    assert max(photos.values()) < SETTINGS.threshold, photos


def test_centroid_method_scores_against_the_mean_reference(reference_folder):
    settings = SETTINGS.model_copy(update={"method": "centroid"})
    scores = score(reference_folder, settings, {"chart": jpeg(bar_chart(42)), "coffee": jpeg(skimage("coffee"))})
    assert scores["chart"] > 0.8 > 0 > scores["coffee"]


def test_reference_rows_report_unreadable_files_and_missing_folders(reference_folder, tmp_path):
    settings = SETTINGS.model_copy(update={"reference_images": str(reference_folder)})
    rows = dict(reference_rows(settings, PixelStatsEncoder(), SAFETY))
    assert isinstance(rows["broken.png"], Rejected) and rows["broken.png"].reason == "corrupt_image"
    good = [row for row in rows.values() if isinstance(row, dict)]
    assert len(good) == len(reference_documents()) and {row["encoder"] for row in good} == {BUILTIN_PIXEL_STATS}
    from asagi_dagster.settings import ConfigError

    with pytest.raises(ConfigError, match="reference_images"):
        list(reference_rows(SETTINGS.model_copy(update={"reference_images": str(tmp_path / "none")}), PixelStatsEncoder(), SAFETY))


def test_hugging_face_encoder_loads_a_local_siglip_and_embeds_unit_vectors(tmp_path):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={**tiny, "vocab_size": 100, "max_position_embeddings": 16},
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
    )
    SiglipModel(config).save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    encoder = load_image_encoder(ModelRef(id=str(tmp_path / "siglip")))
    assert encoder.input_side == 32 and encoder.name == str(tmp_path / "siglip")
    vectors = encoder.embed([skimage("chelsea"), Image.new("RGB", (50, 40), "red")])
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
