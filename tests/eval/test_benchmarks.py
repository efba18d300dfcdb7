"""Reading the three benchmarks in the hub's Parquet layout: the stand-ins (Heron-Bench's
real text), eval-mm's ids and flattening, and bad rows as rejections with reasons."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.benchmarks import BENCHMARKS, RejectedItem
from asagi_dagster.eval.items import dataset_folder, read_items, split_files
from asagi_dagster.eval.settings import BenchmarkSource, EvaluationSettings
from asagi_dagster.settings import ConfigError
from asagi_sample.benchmarks import IMAGE, placeholder, write_benchmark_sample
from tests.eval.heron import FIXTURE


@pytest.fixture
def stand_ins(tmp_path):
    sources = {name: BenchmarkSource(path=str(tmp_path / name)) for name in BENCHMARKS}
    assert len(write_benchmark_sample(sources)) == 3
    assert write_benchmark_sample(sources) == []  # same bytes: nothing rewritten
    return sources


def _items(name: str, sources, limit=None) -> list:
    benchmark = BENCHMARKS[name]
    return list(read_items(benchmark, dataset_folder(benchmark, sources[name], allow_hub=False), limit))


def test_heron_items_carry_the_real_questions_references_categories_and_contexts(stand_ins):
    items = _items("japanese-heron-bench", stand_ins)
    assert len(items) == 103 and not any(isinstance(i, RejectedItem) for i in items)
    questions = {q["question_id"]: q for q in map(json.loads, (FIXTURE / "questions_ja.jsonl").read_text(encoding="utf-8").splitlines())}
    references = {a["question_id"]: a["text"] for a in map(json.loads, (FIXTURE / "answers_gpt4.jsonl").read_text(encoding="utf-8").splitlines())}
    for item in items:
        source = questions[int(item["question_id"])]
        assert (item["question"], item["category"], item["context"]) == (source["text"], source["category"], source["context"])
        assert item["reference"] == references[int(item["question_id"])]
        assert item["bytes"] == placeholder(source["image"]) and item["image_id"] == source["image"]
    assert Counter(i["category"] for i in items) == {"conv": 42, "complex": 40, "detail": 21}


def test_vg_vqa_is_flattened_per_qa_and_itw_ids_are_row_indexes(stand_ins):
    vg = _items("ja-vg-vqa-500", stand_ins)
    assert [(i["image_id"], i["question_id"]) for i in vg] == [
        ("2317", "23170"),
        ("2317", "23171"),
        ("2386", "23860"),
        ("2386", "23861"),
        ("107899", "1078990"),
        ("107899", "1078991"),
    ]
    assert vg[0]["bytes"] == vg[1]["bytes"] and vg[0]["reference"] == "文字"
    itw = _items("ja-vlm-bench-in-the-wild", stand_ins)
    assert [i["question_id"] for i in itw] == [str(n) for n in range(6)]
    assert _items("ja-vlm-bench-in-the-wild", stand_ins, limit=2) == itw[:2]


def test_rows_that_cannot_make_an_item_become_rejections_with_reasons(tmp_path):
    good = {"bytes": placeholder("a.png"), "path": "a.png"}
    rows = [
        {"image": good, "question": "何ですか？", "answer": "猫です。"},
        {"image": None, "question": "何ですか？", "answer": "猫です。"},
        {"image": {"bytes": b"not an image", "path": "b.png"}, "question": "何ですか？", "answer": "猫です。"},
        {"image": good, "question": "  ", "answer": "猫です。"},
        {"image": good, "question": "何ですか？", "answer": None},
    ]
    folder = tmp_path / "itw" / "data"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows, pa.schema([("image", IMAGE), ("question", pa.string()), ("answer", pa.string())])), folder / "test-00000-of-00001.parquet"
    )
    items = _items("ja-vlm-bench-in-the-wild", {"ja-vlm-bench-in-the-wild": BenchmarkSource(path=str(tmp_path / "itw"))})
    assert [i.reason if isinstance(i, RejectedItem) else "item" for i in items] == [
        "item",
        "image_missing",
        "image_unreadable",
        "question_missing",
        "reference_missing",
    ]
    assert [i.question_id if isinstance(i, RejectedItem) else i["question_id"] for i in items] == ["0", "1", "2", "3", "4"]
    vg_rows = [{"image_id": 7, "image": good, "qas": []}]
    vg = tmp_path / "vg" / "data"
    vg.mkdir(parents=True)
    qa = pa.struct([("qa_id", pa.int64()), ("question", pa.string()), ("answer", pa.string())])
    pq.write_table(
        pa.Table.from_pylist(vg_rows, pa.schema([("image_id", pa.int64()), ("image", IMAGE), ("qas", pa.list_(qa))])), vg / "test-00000-of-00001.parquet"
    )
    [rejected] = _items("ja-vg-vqa-500", {"ja-vg-vqa-500": BenchmarkSource(path=str(tmp_path / "vg"))})
    assert (rejected.question_id, rejected.reason) == ("image-7", "no_questions")


def test_split_files_follow_the_hub_layouts_and_name_what_they_found(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "default" / "test").mkdir(parents=True)
    for path in ("data/train-00000-of-00001.parquet", "default/test/0000.parquet"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / path)
    assert split_files(tmp_path, "train") == [tmp_path / "data" / "train-00000-of-00001.parquet"]
    assert split_files(tmp_path, "test") == [tmp_path / "default" / "test" / "0000.parquet"]
    with pytest.raises(ConfigError, match=r"no Parquet file of split 'validation' \(found: data/train-00000-of-00001.parquet, default/test/0000.parquet\)"):
        split_files(tmp_path, "validation")


def test_sources_must_be_local_or_pinned_on_the_hub(tmp_path):
    benchmark = BENCHMARKS["ja-vg-vqa-500"]
    with pytest.raises(ConfigError, match="is not a folder"):
        dataset_folder(benchmark, BenchmarkSource(path=str(tmp_path / "missing")), allow_hub=False)
    with pytest.raises(ConfigError, match="allow_hub is false"):
        dataset_folder(benchmark, BenchmarkSource(revision="abc"), allow_hub=False)
    with pytest.raises(ValueError, match="set path, or allow_hub with a pinned revision"):
        EvaluationSettings(benchmarks={"ja-vg-vqa-500": {}}, allow_hub=True)
    EvaluationSettings(benchmarks={"ja-vg-vqa-500": {"revision": "0123abc"}}, allow_hub=True)  # valid: read from the hub
