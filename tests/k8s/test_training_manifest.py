"""The multi-node training manifest. No Kubernetes cluster can run here, so it is checked
offline: against the official Kubernetes schemas (kubernetes-validate, strict: unknown
fields fail) and by the structure torchrun's static rendezvous needs."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "training" / "multinode.yaml"
KUBERNETES = "1.33.0"


def documents() -> list[dict]:
    return list(yaml.safe_load_all(MANIFEST.read_text()))


def by_kind(kind: str) -> dict:
    (found,) = [d for d in documents() if d["kind"] == kind]
    return found


def test_every_document_validates_against_the_kubernetes_schemas():
    docs = documents()
    assert [d["kind"] for d in docs] == ["Service", "Job"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type"])
def test_the_validation_can_fail(breakage):
    job = copy.deepcopy(by_kind("Job"))
    if breakage == "misspelled field":
        job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    else:
        job["spec"]["completions"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_indexed_job_with_a_static_rendezvous_at_pod_zero():
    service, job = by_kind("Service"), by_kind("Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    nodes = int(env["NNODES"]["value"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == nodes
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"  # retries are Dagster's / a re-apply
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    args = container["args"]
    assert f"--master-addr={job['metadata']['name']}-0.{service['metadata']['name']}" in args
    port = next(a for a in args if a.startswith("--master-port=")).split("=")[1]
    assert int(port) == service["spec"]["ports"][0]["port"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert f"--nproc-per-node={gpus}" in args and container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert "--node-rank=$(NODE_RANK)" in args
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert container["command"] == ["python", "-m", "torch.distributed.run"]
    assert args[args.index("-m") + 1] == "asagi_dagster.train" and args[args.index("--job") + 1] == "$(ASAGI_TRAIN_JOB)"
    for name in re.findall(r"\$\((\w+)\)", " ".join(args)):  # Kubernetes expands only declared variables
        assert name in env, name


def test_credentials_come_from_secrets_only():
    (container,) = by_kind("Job")["spec"]["template"]["spec"]["containers"]
    for var in container["env"]:
        if var["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"):
            assert "value" not in var and var["valueFrom"]["secretKeyRef"]["name"]
