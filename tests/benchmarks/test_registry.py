"""The benchmark registry is whole: every benchmark has its module, dataset, judge style,
leaderboard label and unit, declared rejection reasons, and a row in docs/assets.md; the
profile accepts exactly the registered names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.benchmarks.base import JUDGE_STYLES, METRICS, RejectedItem
from asagi_dagster.eval.leaderboard import SCALE
from asagi_dagster.eval.settings import EvaluationSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "assets.md"


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_is_described_whole(name):
    benchmark = BENCHMARKS[name]
    module = importlib.import_module(type(benchmark).__module__)
    assert benchmark.name == name and module.__name__.endswith("." + name.replace("-", "_")), "one module per benchmark, named after it"
    assert module.__doc__ and len(module.__doc__) > 40, "the module's docstring describes the benchmark"
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", benchmark.hub_id) and benchmark.split
    assert benchmark.judge in JUDGE_STYLES and benchmark.judge_unit in SCALE
    assert benchmark.label and benchmark.rejections
    for model, scores in benchmark.published.items():
        assert set(scores) <= set(METRICS) and benchmark.published_source, f"{model}: published scores need their metric and source"


def test_labels_are_unique():
    labels = [b.label for b in BENCHMARKS.values()]
    assert len(set(labels)) == len(labels)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_a_row_without_anything_gives_only_declared_reasons(name):
    benchmark = BENCHMARKS[name]
    empty = {"question_id": 1, "image": None, "text": None, "question": None, "answer": None, "qas": [{"qa_id": 1}], "image_id": 7}
    reasons = {item.reason for row in (empty, {**empty, "qas": []}) for item in benchmark.rows_to_items(row, 0) if isinstance(item, RejectedItem)}
    assert reasons and reasons <= set(benchmark.rejections)


def test_docs_have_a_row_per_benchmark_and_name_every_rejection():
    docs = DOCS.read_text(encoding="utf-8")
    items_row = next(line for line in docs.splitlines() if line.startswith("| `benchmark_items`"))
    for benchmark in BENCHMARKS.values():
        assert re.search(rf"^\| `{re.escape(benchmark.name)}` \| `{re.escape(benchmark.hub_id)}` \({benchmark.split}\)", docs, re.M), benchmark.name
        for reason in benchmark.rejections:
            assert f"`{reason}`" in items_row, f"{benchmark.name}: rejection {reason} is not in the benchmark_items row"


def test_the_profile_takes_registered_names_only():
    source = {"path": "/data/x"}
    assert set(EvaluationSettings(benchmarks={name: source for name in BENCHMARKS}).benchmarks) == set(BENCHMARKS)
    with pytest.raises(ValueError, match="heron-bench-v2: not a benchmark"):
        EvaluationSettings(benchmarks={"heron-bench-v2": source})
