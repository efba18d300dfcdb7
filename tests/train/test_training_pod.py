"""Stage 1 as the cluster runs it: a Kubernetes pod with 2 GPUs built from the profile,
whose command is torchrun with one worker per GPU, reporting metrics and the result
through Pipes over the pod log, with checkpoints and the model on S3 (moto).

No cluster can run here: the Kubernetes API is tests/fake_kubelet.py, which runs the
pod's command locally with only the pod's env (so two CPU workers on gloo stand in for
the two GPUs). Everything on Dagster's side is dagster-k8s's own PipesK8sClient."""

import dagster as dg

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.storage import Storage
from tests.conftest import BUCKET, write_profile
from tests.fake_kubelet import serve_pods
from tests.synth.test_pods import SECRETS, SYNTHESIS_POD
from tests.train.helpers import write_mixture

TRAINING_POD = {**SYNTHESIS_POD, "gpus": 2, "cpu": "4", "memory": "16Gi", "active_deadline_s": 3600}


def test_stage1_runs_as_a_torchrun_pod_and_reports_through_pipes(tmp_path, s3_endpoint, monkeypatch):
    stage = {"mixture": {"ja_captions": 1.0}, "global_batch": 4, "lr": 1e-3, "steps": 3, "checkpoint_every": 2, "log_every": 1, "max_text_tokens": 64}
    profile = write_profile(
        tmp_path,
        storage={"root": f"s3://{BUCKET}/data", "s3": {"endpoint_url": s3_endpoint, "region": "us-east-1"}, "duckdb_path": None},
        models={"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
        training={"processes_per_node": 1, "export_dtype": "float32", "stage1": stage, "stage2": stage},
        gpu_jobs={"runner": "k8s", "namespace": "asagi", "poll_interval_s": 0.2, "pods": {"synthesis": SYNTHESIS_POD, "training": TRAINING_POD}},
    )
    storage = Storage(load_config(profile).storage)
    write_mixture(storage, "stage1_mixture", 8)
    api = serve_pods(monkeypatch, SECRETS)
    defs = build_definitions(str(profile))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("vlm_training").execute_in_process(instance=instance, asset_selection=[dg.AssetKey("vlm_stage1")], raise_on_error=False)
        assert result.success, [e.event_specific_data.error.to_string()[-2000:] for e in result.get_step_failure_events()]
        (materialization,) = result.asset_materializations_for_node("vlm_stage1")
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]

    (pod,) = api.pods.values()
    container = pod.body.spec.containers[0]
    assert pod.body.metadata.labels["asagi/kind"] == "training"
    # One torchrun worker per GPU of the pod (the profile's processes_per_node is for local runs).
    assert container.command == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "asagi_dagster.train"]
    assert container.resources.limits["nvidia.com/gpu"] == "2" and pod.body.spec.restart_policy == "Never"
    assert {v.name: (v.value_from.secret_key_ref.name if v.value_from else None) for v in container.env}["AWS_ACCESS_KEY_ID"] == "s3-credentials"
    assert any("stage1: 8 examples, 3 steps of 4 (2 processes x 2 micro batches of 1)" in line for line in logs), logs[-20:]
    assert [m["step"] for m in materialization.metadata["metrics"].value] == [1, 2, 3]
    model = materialization.metadata["model"].value
    assert model == f"s3://{BUCKET}/data/vlm_stage1/all/model"
    assert storage.fs.exists(f"{BUCKET}/data/vlm_stage1/all/model/config.json")
    assert storage.read_manifest("vlm_stage1", None).steps == 3
