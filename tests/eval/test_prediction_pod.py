"""Predictions as the cluster makes them: an ``evaluation`` pod from the profile running
``python -m asagi_dagster.eval``, which copies a trained model from S3 (moto), answers
the benchmark and writes its rows and prediction.jsonl back to S3; then the scores.

No cluster can run here: the Kubernetes API is tests/fake_kubelet.py, which runs the
pod's command locally with only the pod's env. Dagster's side is dagster-k8s's own
PipesK8sClient."""

import json

import dagster as dg

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.engines import GenerationSettings, model_path
from asagi_dagster.storage import ModelManifest, Storage
from asagi_sample.benchmarks import write_benchmark_sample
from tests.conftest import BUCKET, write_profile
from tests.fake_kubelet import serve_pods
from tests.synth.test_pods import SECRETS, SYNTHESIS_POD

EVALUATION_POD = {**SYNTHESIS_POD, "gpus": 1, "cpu": "4", "memory": "16Gi", "active_deadline_s": 3600}
STAGE = {"mixture": {"ja_captions": 1.0}, "global_batch": 4, "lr": 1e-3, "steps": 1}


def test_predictions_run_as_an_evaluation_pod_on_a_model_from_s3(tmp_path, s3_endpoint, monkeypatch):
    benchmark = "ja-vlm-bench-in-the-wild"
    profile = write_profile(
        tmp_path,
        storage={"root": f"s3://{BUCKET}/data", "s3": {"endpoint_url": s3_endpoint, "region": "us-east-1"}, "duckdb_path": None},
        models={"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
        training={"stage1": STAGE, "stage2": STAGE},
        evaluation={"benchmarks": {benchmark: {"path": str(tmp_path / "itw"), "limit": 3}}, "models": ["vlm_stage2"], "max_new_tokens": 8},
        gpu_jobs={"runner": "k8s", "namespace": "asagi", "poll_interval_s": 0.2, "pods": {"synthesis": SYNTHESIS_POD, "evaluation": EVALUATION_POD}},
    )
    config = load_config(profile)
    write_benchmark_sample(config.evaluation.benchmarks)
    storage = Storage(config.storage)
    # A trained model on the root: the tiny Llava folder, with vlm_stage2's manifest naming it.
    model_url = f"s3://{BUCKET}/data/vlm_stage2/all/model"
    storage.fs.put(model_path(GenerationSettings(model="builtin:tiny-llava-ja")) + "/", model_url + "/", recursive=True)
    storage.write_manifest(ModelManifest(asset="vlm_stage2", model_url=model_url, stage="stage2", steps=1, examples=4, mixture_url="s3://unused"))
    api = serve_pods(monkeypatch, SECRETS)
    defs = build_definitions(str(profile))
    partition = dg.MultiPartitionKey({"benchmark": benchmark, "model": "vlm_stage2"})
    with dg.instance_for_test() as instance:
        for job, key in (("load_benchmarks", benchmark), ("evaluate_model", partition)):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
            assert result.success, [e.event_specific_data.error.to_string()[-2000:] for e in result.get_step_failure_events()]
        scores = result.asset_materializations_for_node("benchmark_scores")[0].metadata
    (pod,) = api.pods.values()
    container = pod.body.spec.containers[0]
    assert pod.body.metadata.labels["asagi/kind"] == "evaluation"
    assert container.command == ["python", "-m", "asagi_dagster.eval"] and container.resources.limits["nvidia.com/gpu"] == "1"
    lines = storage.fs.cat(f"{BUCKET}/data/benchmark_predictions/{partition}/prediction.jsonl").decode().splitlines()
    assert [json.loads(line)["question_id"] for line in lines] == ["0", "1", "2"]
    manifest = storage.read_manifest("benchmark_predictions", str(partition))
    assert manifest.rows_out == 3 and manifest.source == {"model_url": model_url}
    assert isinstance(scores["rougel"].value, float) and scores["llm"].value == "not computed: no judge configured"
