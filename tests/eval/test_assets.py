"""The evaluation assets through Dagster: items, a tiny local VLM's predictions (through
the GPU-job runner's subprocess), scores judged by a real ``vllm serve`` on 127.0.0.1,
the leaderboard, and eval-mm itself scoring our prediction.jsonl to the same ROUGE-L."""

import json
import subprocess

import dagster as dg
import pyarrow.parquet as pq

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.eval.scores import HISTORY
from asagi_dagster.storage import Storage
from asagi_sample.benchmarks import write_benchmark_sample
from tests.conftest import subprocess_env, write_profile
from tests.eval.test_rougel import EVALMM_SCORES


def _profile(tmp_path, judge_url: str):
    evaluation = {
        "benchmarks": {name: {"path": str(tmp_path / "benchmarks" / name), "limit": 4} for name in BENCHMARKS},
        "models": ["tiny_llava"],
        "max_new_tokens": 12,
        "engine": {"backend": "transformers", "dtype": "float32"},
        "judge": {"model": "tiny-llama-ja", "endpoint": {"base_url": judge_url, "concurrency": 4, "timeout_s": 120, "retries": 0}, "max_tokens": 16},
    }
    evaluation["benchmarks"]["ja-vg-vqa-500"]["instruction"] = "単語で答えてください。"
    profile = write_profile(tmp_path, models={"tiny_llava": {"id": "builtin:tiny-llava-ja"}}, evaluation=evaluation)
    write_benchmark_sample(load_config(profile).evaluation.benchmarks)
    return profile


def _run(defs, instance, job: str, partition=None) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
    failures = [e.event_specific_data.error.to_string()[-2000:] for e in result.get_step_failure_events()]
    assert result.success, failures
    return result


def _metadata(instance, asset: str, partition: str | None = None) -> dict:
    event = (
        instance.get_latest_materialization_event(dg.AssetKey(asset))
        if partition is None
        else next(e for e in instance.fetch_materializations(dg.AssetKey(asset), limit=50).records if e.partition_key == partition)
    )
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_three_benchmarks_scored_end_to_end_with_a_vllm_judge_and_checked_by_eval_mm(tmp_path, vllm_server, evalmm_python, monkeypatch):
    profile = _profile(tmp_path, vllm_server)
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the Pipes subprocess imports this checkout
    defs = build_definitions(str(profile))
    storage = Storage(load_config(profile).storage)
    with dg.instance_for_test() as instance:
        for name in BENCHMARKS:
            _run(defs, instance, "load_benchmarks", name)
            _run(defs, instance, "evaluate_model", dg.MultiPartitionKey({"benchmark": name, "model": "tiny_llava"}))
        _run(defs, instance, "update_leaderboard")
        scores = {name: _metadata(instance, "benchmark_scores", f"{name}|tiny_llava") for name in BENCHMARKS}
        board = _metadata(instance, "leaderboard")
    for name, metadata in scores.items():
        # The judge ran (its numbers mean nothing for a tiny random model): recorded with its id and prompt version.
        assert isinstance(metadata["llm"], float) and metadata["judge_model"] == "tiny-llama-ja", metadata
        assert metadata["judge_prompt_version"].startswith("asagi-judge-1") and metadata["missing_predictions"] == 0
        metrics = {m["metric"]: m for m in metadata["metrics"]}
        assert json.loads(metrics["llm"]["details"])["judge_errors"] == 0 and metrics["llm"]["items"] == 4
        assert 0 <= metadata["judge_parse_failures"] <= 4
    assert 0 <= scores["ja-vg-vqa-500"]["llm"] <= 9 and scores["japanese-heron-bench"]["llm"] >= 0
    lines = board["table"].splitlines()
    assert lines[0].endswith("| GPT-4o | tiny_llava (ours) |")
    assert any(line.startswith("| Heron | LLM % | tiny-llama-ja |") for line in lines) and any(
        line.startswith("| VG-VQA | LLM /5 | as published |") for line in lines
    )
    assert "Ours: tiny_llava, this project: the tiny demo model" in board["table"] and board["chart"].startswith("![leaderboard](data:image/png;base64,")
    history = pq.read_table(storage.path(HISTORY)).to_pylist()
    assert sorted((r["benchmark"], r["metric"]) for r in history) == sorted((n, m) for n in BENCHMARKS for m in ("llm", "rougel"))
    assert {r["model_url"] for r in history} == {"builtin:tiny-llava-ja"}  # the model that answered, from the predictions' manifest
    # eval-mm's own RougeLScorer on our prediction.jsonl gives the score we recorded.
    for name in BENCHMARKS:
        partition = f"{name}|tiny_llava"
        predictions = [
            json.loads(line) for line in (tmp_path / "data" / "benchmark_predictions" / partition / "prediction.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        references = {r["question_id"]: r["reference"] for r in pq.read_table(tmp_path / "data" / "benchmark_items" / name / "data.parquet").to_pylist()}
        assert len(predictions) == 4 and all(p["text"] for p in predictions)
        pairs = [(references[p["question_id"]], p["text"]) for p in predictions]
        script = tmp_path / "evalmm_scores.py"
        script.write_text(EVALMM_SCORES)
        run = subprocess.run([evalmm_python, str(script)], input=json.dumps(pairs), capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        theirs = json.loads(run.stdout.strip().splitlines()[-1])
        assert abs(sum(theirs) / len(theirs) - scores[name]["rougel"]) <= 1e-9, name
