"""One model's scores on one benchmark: ROUGE-L for every benchmark, and the LLM judge
(Heron-Bench's relative score, or the 1-5 score of the other two) when a judge is
configured. Without one, the judge metric is recorded as not computed, never as a number.

Per-item scores go to the asset's Parquet file; the task scores are appended to a
history (one Parquet file per evaluation under ``benchmark_score_history/``), so a
re-evaluation adds rows and DuckDB can query scores over time.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.eval.judge_client import Judge, Judged
from asagi_dagster.eval.metrics import rougel_scores
from asagi_dagster.eval.verdicts import first_digit, heron_pair
from asagi_dagster.storage import Storage

VERSION = 1
ITEM_SCORES = pa.schema(
    [
        ("question_id", pa.string()),
        ("category", pa.string()),
        ("reference", pa.string()),
        ("prediction", pa.string()),
        ("prediction_missing", pa.bool_()),  # no prediction row: scored as an empty answer
        ("rougel", pa.float64()),
        ("judge_score", pa.float64()),  # mean over repeats of the parsed scores; null: none parsed
        ("judge_reference_score", pa.float64()),  # Heron-Bench: the reference answer's score
        ("judge_outputs", pa.list_(pa.string())),  # raw, one per repeat
    ]
)
HISTORY = "benchmark_score_history"
HISTORY_SCHEMA = pa.schema(
    [
        ("evaluated_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("model_url", pa.string()),
        ("benchmark", pa.string()),
        ("metric", pa.string()),  # rougel | llm
        ("value", pa.float64()),  # null when not computed
        ("status", pa.string()),  # computed | not computed: <why>
        ("items", pa.int64()),
        ("parse_failures", pa.int64()),
        ("judge_model", pa.string()),
        ("judge_prompt_version", pa.string()),
        ("judge_temperature", pa.float64()),
        ("judge_seed", pa.int64()),
        ("judge_repeats", pa.int64()),
        ("details", pa.string()),  # JSON: per-category scores, per-repeat scores, errors
    ]
)
NO_JUDGE = "not computed: no judge configured"


@dataclass
class BenchmarkScores:
    item_rows: list[dict]
    metrics: list[dict]  # history rows without time, run and model


def score(benchmark: str, items: list[dict], predictions: dict[str, str], judge: Judge | None) -> BenchmarkScores:
    """Score ``predictions`` (question id -> text) on the benchmark's ``items``."""
    if not items:
        raise ValueError(f"{benchmark}: no items to score")
    texts = [predictions.get(i["question_id"], "") for i in items]
    rouge = rougel_scores([i["reference"] for i in items], texts)
    rows = [
        {
            "question_id": i["question_id"],
            "category": i["category"],
            "reference": i["reference"],
            "prediction": t,
            "prediction_missing": i["question_id"] not in predictions,
            "rougel": r,
            "judge_score": None,
            "judge_reference_score": None,
            "judge_outputs": [],
        }
        for i, t, r in zip(items, texts, rouge)
    ]
    metrics = [_metric("rougel", sum(rouge) / len(rouge), len(items), details={"missing_predictions": sum(r["prediction_missing"] for r in rows)})]
    if judge is None:
        metrics.append(_metric("llm", None, len(items), status=NO_JUDGE))
        return BenchmarkScores(rows, metrics)
    heron = BENCHMARKS[benchmark].judge == "heron"
    judged = judge.heron(items, texts) if heron else judge.likert(items, texts)
    _attach_item_scores(rows, judged, heron)
    details = {"per_repeat": judged.per_repeat, "judge_errors": judged.errors, **judged.details}
    metrics.append({**_metric("llm", judged.score, len(items), details=details, parse_failures=judged.parse_failures), **judge.record()})
    return BenchmarkScores(rows, metrics)


def _attach_item_scores(rows: list[dict], judged: Judged, heron: bool) -> None:
    for index, row in enumerate(rows):
        outputs = [repeat[index] for repeat in judged.outputs]
        row["judge_outputs"] = outputs
        if heron:
            pairs = [p for p in map(heron_pair, outputs) if p]
            row["judge_score"] = sum(p[0] for p in pairs) / len(pairs) if pairs else None
            row["judge_reference_score"] = sum(p[1] for p in pairs) / len(pairs) if pairs else None
        else:
            digits = [d for d in map(first_digit, outputs) if d is not None]
            row["judge_score"] = sum(digits) / len(digits) if digits else None


def _metric(metric: str, value: float | None, items: int, status: str = "computed", details: dict | None = None, parse_failures: int | None = None) -> dict:
    return {
        "metric": metric,
        "value": value,
        "status": status,
        "items": items,
        "parse_failures": parse_failures,
        "judge_model": None,
        "judge_prompt_version": None,
        "judge_temperature": None,
        "judge_seed": None,
        "judge_repeats": None,
        "details": json.dumps(details or {}, ensure_ascii=False, sort_keys=True),
    }


def append_history(storage: Storage, run_id: str, model: str, model_url: str, benchmark: str, metrics: list[dict]) -> str:
    """Write the task scores as a new history file (never over an old one); returns its path."""
    now = datetime.now(timezone.utc)
    rows = [{"evaluated_at": now, "run_id": run_id, "model": model, "model_url": model_url, "benchmark": benchmark, **m} for m in metrics]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, HISTORY_SCHEMA), buffer)
    path = storage.path(HISTORY, f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet")
    storage.write_bytes(path, buffer.getvalue())
    return path


def history_glob(storage: Storage) -> str:
    return storage.url(storage.path(HISTORY, "*.parquet"))
