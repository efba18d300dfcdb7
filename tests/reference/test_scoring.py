"""Reference texts with the tiny Japanese CLIP built on the spot: the model builds once
and deterministically, and each filtered pair gets its page's best-scoring sentence,
or a reason."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.filters import schemas
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.settings import ImageSafetySettings
from asagi_dagster.models.clip import DualEncoder
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.models.tiny import build_tiny_clip, tiny_clip
from asagi_dagster.reference import REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION
from asagi_dagster.reference.extract import extraction_config, page_sentences
from asagi_dagster.reference.scoring import write_reference_texts
from asagi_dagster.reference.settings import ReferenceTextSettings
from asagi_dagster.storage import StageWriter, Storage, StorageSettings
from asagi_dagster.web import schemas as web_schemas
from asagi_sample.site import page_html, page_texts
from tests.filters import images

SETTINGS = ReferenceTextSettings()
SAFETY = ImageSafetySettings()


@pytest.fixture(scope="module")
def scorer() -> DualEncoder:
    return DualEncoder(ModelRef(id=str(tiny_clip(page_texts()))))


def test_tiny_clip_is_built_once_and_deterministically(tmp_path, model_cache):
    folder = tiny_clip(page_texts())
    assert folder.parent == model_cache
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert tiny_clip(page_texts()) == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    build_tiny_clip(tmp_path / "again", page_texts())
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (folder / "tokenizer.json").read_text()
    from safetensors.numpy import load_file

    first, second = load_file(folder / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


def test_dual_encoder_gives_unit_embeddings(scorer):
    texts = scorer.text_features(["窓辺でくつろぐ茶トラの猫", "発射台から打ち上げられるロケット"])
    image = scorer.image_features([small_image(images.photo("chelsea"), scorer.input_side, SAFETY)])
    assert texts.shape == (2, 32) and image.shape == (1, 32)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5) and not np.allclose(texts[0], texts[1])


def _write(path, rows, schema):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


def test_each_pair_gets_its_best_sentence_or_a_reason(tmp_path, scorer):
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    news = page_html("news.html", "https://img.example.jp")
    documents = [
        {"record_id": "doc-news", "url": "https://example.jp/news.html", "html": news},
        {"record_id": "doc-empty", "url": "https://example.jp/empty.html", "html": "<html><body><img src=a.jpg alt='写真'></body></html>"},
    ]

    def pair(pair_id, doc, caption):
        return {**{n: None for n in schemas.FILTERED_PAIRS.names}, "pair_id": pair_id, "origin_id": doc, "caption": caption, "source": "web"}

    pairs = [
        pair("p1", "doc-news", "発射台から打ち上げられるロケット"),
        pair("p2", "doc-news", "宇宙服を着た宇宙飛行士"),
        pair("p3", "doc-empty", "写真"),
        pair("p4", "doc-news", "画像ファイルがない"),
    ]
    image_rows = [
        {"pair_id": p, "image_url": None, "origin": "warc", "content_type": "image/jpeg", "sha256": None, "size": 1, "bytes": images.photo(name)}
        for p, name in (("p1", "rocket"), ("p2", "astronaut"), ("p3", "coffee"))
    ]
    doc_rows = [{**{n: None for n in web_schemas.WEB_DOCUMENTS.names}, **d} for d in documents]
    with StageWriter(storage, "reference_texts", "s", REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION) as out:
        write_reference_texts(
            storage,
            _write(tmp_path / "pairs.parquet", pairs, schemas.FILTERED_PAIRS),
            _write(tmp_path / "docs.parquet", doc_rows, web_schemas.WEB_DOCUMENTS),
            _write(tmp_path / "images.parquet", image_rows, web_schemas.PAIR_IMAGES),
            out,
            SETTINGS,
            scorer,
            SAFETY,
        )
    manifest = out.manifest
    assert (manifest.rows_in, manifest.rows_out) == (4, 2)
    assert manifest.rejected_by_reason == {"no_usable_sentence": 1, "image_missing": 1}
    rows = {r["pair_id"]: r for r in storage.iter_rows(storage.strip_protocol(manifest.data_url))}
    sentences = page_sentences(news, "https://example.jp/news.html", SETTINGS, extraction_config(SETTINGS))
    # Recompute p1's scores with the same model: the row holds the argmax and the next ones.
    image = scorer.image_features([small_image(images.photo("rocket"), scorer.input_side, SAFETY)])[0]
    scores = scorer.text_features([*sentences, "発射台から打ち上げられるロケット"]) @ image
    row = rows["p1"]
    best = max(scores[:-1].max(), scores[-1])
    assert row["score"] == pytest.approx(float(best), abs=1e-5)
    assert row["reference_text"] == (sentences[int(scores[:-1].argmax())] if row["reference_source"] == "sentence" else "発射台から打ち上げられるロケット")
    assert row["runner_up_scores"] == pytest.approx(sorted(scores[:-1].tolist(), reverse=True)[1:4], abs=1e-5)
    assert row["sentences"] == len(sentences) and row["scorer"].endswith("tiny-clip-ja-v1")
