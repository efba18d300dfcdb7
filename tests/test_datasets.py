"""Open-dataset sources from the local formats a profile can name (Parquet, JSONL +
image folder, imagefolder), each bad row a rejection with a reason, and the dataset
assets in Dagster through the same filters and the decontamination audit."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.config import load_config
from asagi_dagster.core import Rejected
from asagi_dagster.datasets import DatasetSource, DatasetSourceError, iter_dataset
from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_filter_sample
from tests.conftest import write_profile
from tests.filters import images


def read(name: str, **source) -> dict[str, dict | Rejected]:
    return dict(iter_dataset(name, DatasetSource(licence="CC BY 4.0", **source)))


def test_parquet_with_inline_bytes_structs_and_vqa_columns(tmp_path):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "qid": ["q1", "q2", "q3"],
            "image": pa.array([{"bytes": images.photo("chelsea"), "path": "a.jpg"}, {"bytes": images.photo("coffee"), "path": None}, None], image_type),
            "question": ["What animal is this?", "What is in the cup?", "Where?"],
            "answer": ["a cat", "coffee", "here"],
            "vg": [2317, None, 5],
        }
    )
    pq.write_table(table, tmp_path / "gqa.parquet")
    rows = read(
        "gqa",
        format="parquet",
        path=str(tmp_path / "gqa.parquet"),
        question_column="question",
        answer_column="answer",
        id_column="qid",
        vg_image_id_column="vg",
        language="en",
    )
    assert rows["gqa/q1"]["question"] == "What animal is this?" and rows["gqa/q1"]["vg_image_id"] == 2317
    assert rows["gqa/q1"]["image_name"] == "a.jpg" and rows["gqa/q1"]["bytes"] == images.photo("chelsea")
    assert rows["gqa/q2"]["language"] == "en" and rows["gqa/q2"]["text"] is None
    assert isinstance(rows["gqa/q3"], Rejected) and rows["gqa/q3"].reason == "missing_image"


def test_jsonl_with_an_image_folder_rejects_each_bad_row(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.jpg").write_bytes(images.photo("chelsea"))
    (tmp_path / "secret.jpg").write_bytes(images.photo("rocket"))
    lines = [
        json.dumps({"id": 1, "file": "cat.jpg", "caption": "窓辺の猫", "image_id": 7}, ensure_ascii=False),
        json.dumps({"id": 2, "file": "cat.jpg", "caption": "外を見る猫", "image_id": 7}, ensure_ascii=False),
        json.dumps({"id": 3, "file": "gone.jpg", "caption": "ない画像"}, ensure_ascii=False),
        json.dumps({"id": 4, "file": "../secret.jpg", "caption": "外の画像"}, ensure_ascii=False),
        json.dumps({"id": 5, "file": "cat.jpg", "caption": "   "}),
        "{not json",
        "[1, 2]",
        json.dumps({"id": 8, "file": "cat.jpg", "caption": "猫", "vg": "abc"}, ensure_ascii=False),
    ]
    (tmp_path / "stair.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read(
        "stair",
        format="jsonl",
        path=str(tmp_path / "stair.jsonl"),
        image_dir=str(tmp_path / "images"),
        image_column="file",
        text_column="caption",
        id_column="id",
        image_id_column="image_id",
        vg_image_id_column="vg",
    )
    assert rows["stair/1"]["origin_id"] == rows["stair/2"]["origin_id"] == "7"  # two captions, one photo
    reasons = {pair_id: row.reason for pair_id, row in rows.items() if isinstance(row, Rejected)}
    assert reasons == {
        "stair/3": "missing_image",
        "stair/4": "missing_image",
        "stair/5": "empty_text",
        "stair/row5": "unreadable_row",
        "stair/row6": "unreadable_row",
        "stair/8": "invalid_vg_image_id",
    }
    assert "outside" in rows["stair/4"].detail


def test_imagefolder_and_clear_errors_for_sources_that_cannot_open(tmp_path, monkeypatch):
    (tmp_path / "flickr").mkdir()
    (tmp_path / "flickr" / "a.png").write_bytes(images.photo("astronaut", "PNG"))
    (tmp_path / "flickr" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "宇宙飛行士"}, ensure_ascii=False) + "\n")
    rows = read("flickr-jp", format="imagefolder", path=str(tmp_path / "flickr"), image_column="file_name", text_column="text")
    assert rows["flickr-jp/row0"]["text"] == "宇宙飛行士" and rows["flickr-jp/row0"]["origin_id"] == "a.png"
    with pytest.raises(DatasetSourceError, match="does not exist"):
        read("x", format="parquet", path=str(tmp_path / "nowhere"), text_column="t")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetSourceError, match="Hugging Face hub"):
        read("x", format="parquet", hub_id="stair-captions/does-not-exist", text_column="t")
    with pytest.raises(ValueError, match="exactly one of path"):
        DatasetSource(format="parquet", licence="x", text_column="t")


def test_dataset_assets_screen_filter_and_audit(tmp_path):
    folder = tmp_path / "english"
    folder.mkdir()
    rows = [
        {"file_name": "cat.jpg", "text": "A cat looking out of a window", "vg": 1},
        {"file_name": "cat.jpg", "text": "A ginger cat by the window", "vg": 1},
        {"file_name": "rocket.jpg", "text": "A rocket lifting off", "vg": 2317},  # a JA-VG-VQA-500 image
        {"file_name": "tiny.png", "text": "A tiny icon", "vg": 3},
    ]
    (folder / "cat.jpg").write_bytes(images.photo("chelsea"))
    (folder / "rocket.jpg").write_bytes(images.photo("rocket"))
    (folder / "tiny.png").write_bytes(images.noise((40, 40)))
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    profile = write_profile(
        tmp_path,
        sources={
            "datasets": {
                "vg-en": {
                    "format": "imagefolder",
                    "path": str(folder),
                    "image_column": "file_name",
                    "text_column": "text",
                    "vg_image_id_column": "vg",
                    "language": "en",
                    "licence": "CC BY 4.0",
                    "rules": {"ascii_only": {"enabled": False}},
                }
            }
        },
        filters={"decontamination": {"benchmarks": {"ja-vg-vqa-500": {"vg_image_ids": str(tmp_path / "bench" / "vg.txt")}}}},
    )
    config = load_config(profile)
    write_filter_sample(config.filters)
    defs = build_definitions(str(profile))
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("dataset_ingest").execute_in_process(instance=instance, partition_key="vg-en").success
        assert defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance).success
        result = defs.resolve_job_def("filtered_dataset_splits").execute_in_process(instance=instance, partition_key="vg-en")
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"rows_accounted": True, "no_benchmark_overlap": True}
        screened = instance.get_latest_materialization_event(dg.AssetKey("screened_dataset_pairs")).asset_materialization.metadata
        assert screened["rejected_by_reason"].value == {"image_size": 1}  # English text passes: ascii_only is off here
        filtered = result.asset_materializations_for_node("filtered_dataset_pairs")[0].metadata
        assert filtered["rejected_by_reason"].value == {"benchmark_overlap": 1}
        assert filtered["rows_out"].value == 2  # both captions of the one cat photo
