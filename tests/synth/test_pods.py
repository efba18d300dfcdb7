"""The cluster path: a corpus partition runs as a Kubernetes pod through dagster-k8s's
PipesK8sClient, with storage on a real S3 endpoint (moto on 127.0.0.1). No cluster can
run here, so the Kubernetes API is a stand-in (tests/fake_kubelet.py) that runs the pod's
command locally; everything on Dagster's side (pod body, pod waiting, log streaming,
Pipes messages) is dagster-k8s's own code."""

import dagster as dg
import pyarrow.parquet as pq

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from tests.conftest import BUCKET, write_profile
from tests.fake_kubelet import PIPES_CALLS, serve_pods
from tests.synth.helpers import failures, materialize, synthesis_section, write_caption_inputs

SYNTHESIS_POD = {
    "image": "registry.example/asagi-dagster:1.0",
    "gpus": 1,
    "cpu": "2",
    "memory": "8Gi",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "secret_env": {"AWS_ACCESS_KEY_ID": "s3-credentials/access_key", "AWS_SECRET_ACCESS_KEY": "s3-credentials/secret_key", "HF_TOKEN": "hf/token"},
    "active_deadline_s": 7200,
    "pod_wait_timeout_s": 600,
    "service_account": "asagi-gpu",
}
SECRETS = {("s3-credentials", "access_key"): "testing", ("s3-credentials", "secret_key"): "testing", ("hf", "token"): "hf_unused"}


def test_a_partition_runs_as_a_gpu_pod_built_from_the_profile_and_reports_through_pipes(tmp_path, s3_endpoint, monkeypatch):
    profile = write_profile(
        tmp_path,
        storage={"root": f"s3://{BUCKET}/data", "s3": {"endpoint_url": s3_endpoint, "region": "us-east-1"}, "duckdb_path": None},
        synthesis=synthesis_section(chunk_rows=2, max_tokens=16),
        gpu_jobs={"runner": "k8s", "namespace": "asagi", "poll_interval_s": 0.2, "pods": {"synthesis": SYNTHESIS_POD}},
    )
    storage = Storage(load_config(profile).storage)
    write_caption_inputs(storage, "s1", pairs=3)
    api = serve_pods(monkeypatch, SECRETS)
    with dg.instance_for_test() as instance:
        result, logs = materialize(profile, "ja_captions", "s1", instance)
    assert result.success, failures(result)

    (pod,) = api.pods.values()
    body = pod.body
    container = body.spec.containers[0]
    assert pod.namespace == "asagi" and body.metadata.labels["asagi/kind"] == "synthesis"
    assert container.image == SYNTHESIS_POD["image"] and container.command == ["python", "-m", "asagi_dagster.synth"]
    assert container.resources.limits == container.resources.requests == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}
    spec = body.spec
    assert spec.node_selector == SYNTHESIS_POD["node_selector"] and spec.restart_policy == "Never"
    assert [(t.key, t.operator, t.effect) for t in spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert spec.active_deadline_seconds == 7200 and spec.service_account_name == "asagi-gpu"
    env = {var.name: var for var in container.env}
    assert env["HF_TOKEN"].value is None and env["HF_TOKEN"].value_from.secret_key_ref.name == "hf"
    assert "testing" not in str(body)  # credentials reach the pod as Secret references only
    assert "DAGSTER_PIPES_CONTEXT" in env and "DAGSTER_PIPES_MESSAGES" in env
    assert pod.deleted and pod.process.returncode == 0
    assert {("create", "pods"), ("delete", "pods")} <= api.calls <= PIPES_CALLS  # what k8s/cluster/rbac.yaml allows

    # The pod's log lines and its manifest came back through Pipes, over the pod log stream.
    assert any("chunk 2:" in m for m in logs) and any("loading generator japanese_llm" in m for m in logs)
    manifest = storage.read_manifest("ja_captions", "s1")
    assert manifest.data_url.startswith("s3://") and manifest.rows_in == 6 and manifest.rows_out + manifest.rows_rejected == 6
    assert result.asset_materializations_for_node("ja_captions")[0].metadata["rows_in"].value == 6
    rows = pq.read_table(storage.strip_protocol(manifest.data_url), filesystem=storage.fs).to_pylist()
    assert all(r["generator"] == "japanese_llm" and r["model"] == "builtin:tiny-llama-ja" for r in rows)
