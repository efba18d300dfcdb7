"""Scoring one model on one benchmark: ROUGE-L, the judge over real HTTP with fixed
outputs (Heron-Bench's aggregation, repeats, parse failures), "not computed" without a
judge, the score history in Parquet and the leaderboard built from it."""

import base64
import io
import json
import re

import duckdb
import pytest
from PIL import Image

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.engines import EndpointSettings
from asagi_dagster.eval import leaderboard as board
from asagi_dagster.eval.items import dataset_folder, read_items
from asagi_dagster.eval.judge_client import HERON_SYSTEM, PROMPT_VERSION, Judge
from asagi_dagster.eval.metrics import rougel_scores
from asagi_dagster.eval.scores import NO_JUDGE, append_history, history_glob, score
from asagi_dagster.eval.settings import BenchmarkSource, JudgeSettings
from asagi_dagster.eval.verdicts import heron_score
from asagi_dagster.storage import Storage, StorageSettings
from asagi_sample.benchmarks import write_benchmark_sample
from tests.eval.heron import reference_and_answers
from tests.eval.judge_server import judge_server


def _items(tmp_path, name: str) -> list[dict]:
    source = BenchmarkSource(path=str(tmp_path / name))
    write_benchmark_sample({name: source})
    items = list(read_items(BENCHMARKS[name], dataset_folder(BENCHMARKS[name], source, False)))
    return [{k: v for k, v in item.items() if k != "bytes"} for item in items]


def _heron_output(body: dict) -> str:
    """A fixed verdict per question and seed; every 17th question gets prose, no JSON."""
    prompt = body["messages"][1]["content"]
    found = re.search(r'\{"context": (".*?"), "question": (".*?"), "reference_answer"', prompt)
    qid = _HERON_QUESTIONS[found.groups()]
    return heron_verdict(qid, body["seed"])


def heron_verdict(qid: int, seed: int) -> str:
    if qid % 17 == 0:
        return "The model answer is fine."
    return '```json\n{"score_gpt": %d, "score": %d}\n```' % (7 + qid % 3, 1 + (qid + seed) % 10)


_HERON_QUESTIONS: dict[tuple[str, str], int] = {}  # (context, question) as JSON -> question id


def test_heron_judge_over_http_aggregates_as_eval_mm_with_repeats_and_parse_failures(tmp_path):
    items = _items(tmp_path, "japanese-heron-bench")
    _HERON_QUESTIONS.update(
        {(json.dumps(i["context"], ensure_ascii=False), json.dumps(i["question"], ensure_ascii=False)): int(i["question_id"]) for i in items}
    )
    assert len(_HERON_QUESTIONS) == 103
    _, predictions = reference_and_answers("gpt4v_0404_ja")  # question ids 0..102 in order
    with judge_server(_heron_output) as (url, bodies):
        judge = Judge(JudgeSettings(model="judge-x", endpoint=EndpointSettings(base_url=url, concurrency=8), repeats=2, seed=5))
        result = score("japanese-heron-bench", items, {i["question_id"]: p for i, p in zip(items, predictions)}, judge)
    categories = [i["category"] for i in items]
    expected = [heron_score(categories, [heron_verdict(int(i["question_id"]), seed) for i in items]) for seed in (5, 6)]
    llm = next(m for m in result.metrics if m["metric"] == "llm")
    assert llm["value"] == pytest.approx((expected[0].score + expected[1].score) / 2, abs=1e-12)
    assert expected[0].score != expected[1].score  # the repeats really differ, and are averaged
    assert llm["parse_failures"] == 2 * sum(int(i["question_id"]) % 17 == 0 for i in items) == 14
    assert {k: llm[k] for k in ("judge_model", "judge_prompt_version", "judge_temperature", "judge_seed", "judge_repeats")} == {
        "judge_model": "judge-x",
        "judge_prompt_version": PROMPT_VERSION,
        "judge_temperature": 0.0,
        "judge_seed": 5,
        "judge_repeats": 2,
    }
    details = json.loads(llm["details"])
    assert details["per_repeat"] == [expected[0].score, expected[1].score] and details["judge_errors"] == 0
    assert details["relative"]["conv"] == pytest.approx((expected[0].relative["conv"] + expected[1].relative["conv"]) / 2)
    # What went over the wire: eval-mm's settings, the context and both answers as JSON strings.
    assert len(bodies) == 2 * 103 and {b["seed"] for b in bodies} == {5, 6}
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 1024 and b["model"] == "judge-x" and "repetition_penalty" not in b for b in bodies)
    # Question 0's request: several questions share a context, and requests arrive in any order.
    first = next(b for b in bodies if all(json.dumps(items[0][k], ensure_ascii=False) in b["messages"][1]["content"] for k in ("context", "question")))
    assert first["messages"][0] == {"role": "system", "content": HERON_SYSTEM}
    assert json.dumps(predictions[0], ensure_ascii=False) in first["messages"][1]["content"]
    row = result.item_rows[1]
    assert row["judge_outputs"] == [heron_verdict(1, 5), heron_verdict(1, 6)] and row["judge_score"] == (7 + 8) / 2 and row["judge_reference_score"] == 8
    assert result.item_rows[0]["judge_score"] is None  # question 0: prose both times


def test_likert_judge_takes_the_first_digit_and_counts_unparsed_as_zero(tmp_path):
    items = _items(tmp_path, "ja-vlm-bench-in-the-wild")
    verdicts = iter(["4", "Score: 3 (fair)", "five", "5", "2", "1"])
    with judge_server(lambda body: next(verdicts)) as (url, _):
        judge = Judge(JudgeSettings(model="judge-x", endpoint=EndpointSettings(base_url=url, concurrency=1)))
        result = score("ja-vlm-bench-in-the-wild", items, {i["question_id"]: i["reference"] for i in items}, judge)
    llm = next(m for m in result.metrics if m["metric"] == "llm")
    assert llm["value"] == pytest.approx((4 + 3 + 0 + 5 + 2 + 1) / 6) and llm["parse_failures"] == 1
    assert [r["judge_score"] for r in result.item_rows] == [4, 3, None, 5, 2, 1]
    assert next(m for m in result.metrics if m["metric"] == "rougel")["value"] == 100.0  # the references themselves


def test_without_a_judge_the_judge_score_is_not_computed_and_missing_answers_score_empty(tmp_path):
    items = _items(tmp_path, "ja-vg-vqa-500")
    predictions = {i["question_id"]: "赤いバイク" for i in items[1:]}  # the first item has no prediction
    result = score("ja-vg-vqa-500", items, predictions, judge=None)
    rougel, llm = result.metrics
    expected = rougel_scores([i["reference"] for i in items], [""] + ["赤いバイク"] * 5)
    assert rougel["value"] == pytest.approx(sum(expected) / 6, abs=1e-12) and json.loads(rougel["details"]) == {"missing_predictions": 1}
    assert (llm["value"], llm["status"], llm["judge_model"]) == (None, NO_JUDGE, None)
    assert result.item_rows[0]["prediction_missing"] and result.item_rows[0]["rougel"] == 0.0


def test_history_keeps_every_evaluation_and_the_leaderboard_shows_the_latest_beside_published(tmp_path):
    storage = Storage(StorageSettings(root=str(tmp_path / "data"), duckdb_path=str(tmp_path / "a.duckdb")))
    items = _items(tmp_path, "ja-vg-vqa-500")
    first = score("ja-vg-vqa-500", items, {}, judge=None)
    second = score("ja-vg-vqa-500", items, {i["question_id"]: i["reference"] for i in items}, judge=None)
    append_history(storage, "run-1", "vlm_stage2", "/models/a", "ja-vg-vqa-500", first.metrics)
    append_history(storage, "run-2", "vlm_stage2", "/models/a", "ja-vg-vqa-500", second.metrics)
    con = duckdb.connect()
    all_rows = con.execute(f"SELECT run_id, metric, value FROM read_parquet('{history_glob(storage)}') ORDER BY evaluated_at, metric").fetchall()
    assert all_rows == [("run-1", "llm", None), ("run-1", "rougel", 0.0), ("run-2", "llm", None), ("run-2", "rougel", 100.0)]
    cursor = con.execute(board.latest_scores_sql(history_glob(storage)))
    latest = [dict(zip([d[0] for d in cursor.description], row)) for row in cursor.fetchall()]
    assert [(r["run_id"], r["metric"]) for r in latest] == [("run-2", "llm"), ("run-2", "rougel")]
    judged = {**latest[0], "benchmark": "japanese-heron-bench", "value": 61.5, "status": "computed", "judge_model": "Qwen/Qwen2.5-72B-Instruct"}
    rows = board.entries(latest + [judged])
    table = board.markdown(rows, {"vlm_stage2": "a note"})
    lines = table.splitlines()
    # A row per metric and judge (each judge's scores apart), a column per model, ours last.
    assert lines[0] == "| benchmark | metric | judge | Asagi-2B | Asagi-4B | Asagi-14B | llm-jp-3-vila-14b | GPT-4o | vlm_stage2 (ours) |"
    assert "| Heron | LLM % | as published | 44.7 | 49.3 | 55.8 | 57.2 | 87.6 |  |" in lines
    assert "| Heron | LLM % | Qwen/Qwen2.5-72B-Instruct |  |  |  |  |  | 61.5 |" in lines
    assert "| VG-VQA | ROUGE-L | - | 53.7 | 55.6 | 56.8 | 16.2 | 12.1 | 100.0 |" in lines
    assert "| VG-VQA | LLM /5 | not computed |  |  |  |  |  | not computed |" in lines
    assert lines[-1] == "Ours: vlm_stage2, this project: a note." and "from the Asagi model card (llm-jp-eval-mm)" in lines[-2]
    stored = [board.stored(r) for r in rows]
    assert len(stored) == 5 * 5 + 3 and {r["status"] for r in stored} == {"published", "computed", NO_JUDGE}
    png = base64.b64decode(board.bar_chart_png(rows).removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size[0] > 400


def test_a_judge_pinned_by_revision_is_recorded_with_it():
    settings = JudgeSettings(model="judge-x", revision="0123abc", endpoint=EndpointSettings(base_url="http://127.0.0.1:9/v1"))
    assert Judge(settings).record()["judge_model"] == "judge-x@0123abc"  # scores under another commit go in another column
