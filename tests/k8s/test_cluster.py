"""What a lab applies to its cluster (k8s/): manifests, the judge server, the Helm values
and the images. No Kubernetes cluster and no Helm chart can run here, so each is checked
offline against what would read it: the official Kubernetes schemas
(kubernetes-validate, strict), Dagster's own config schemas for the instance settings
the chart writes, and the project's own pins and entry points."""

import copy
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from asagi_dagster.config import load_config
from asagi_dagster.pods import JUDGE_NAME, JUDGE_PORT, PodSettings, judge_manifests, pod_spec
from resources.gpu_jobs import GPU_RUN_TAG
from tests.fake_kubelet import KUBERNETES, PIPES_CALLS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CLUSTER_PROFILE = REPO / "configs" / "cluster.example.yaml"


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.parent.name != "helm":  # chart values, not manifests: checked below
            found += [(f"{path.relative_to(K8S)}#{i}", doc) for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]
    return found


def values() -> dict:
    return yaml.safe_load((K8S / "helm" / "values.yaml").read_text())


def as_pod(spec: dict, image: str = "registry.example/asagi-worker:1", command: list[str] | None = None) -> dict:
    spec = copy.deepcopy(spec)
    for container in spec["containers"]:
        container.setdefault("name", "main")
        container.setdefault("image", image)
        if command:
            container["command"] = command
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_every_manifest_validates_against_the_kubernetes_schemas():
    docs = manifests()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "PersistentVolumeClaim", "Job", "Service"} <= kinds
    for name, doc in docs:
        try:
            validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message}")


def test_the_validation_can_fail():
    (role,) = [doc for _, doc in manifests() if doc["kind"] == "Role"]
    broken = copy.deepcopy(role)
    broken["rules"][0]["verb"] = broken["rules"][0].pop("verbs")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_secrets_are_templates_without_values():
    secrets = [doc for _, doc in manifests() if doc["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"s3-credentials", "huggingface", "judge-api"}
    for secret in secrets:
        assert "data" not in secret and set(secret["stringData"].values()) == {""}


def test_every_secret_the_profile_and_values_name_has_a_template():
    templates = {(doc["metadata"]["name"], key) for _, doc in manifests() if doc["kind"] == "Secret" for key in doc["stringData"]}
    config = load_config(CLUSTER_PROFILE)
    named = {tuple(ref.split("/")) for pod in config.gpu_jobs.pods.values() for ref in pod.secret_env.values()}
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    named |= {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in deployment["env"] if "valueFrom" in e}
    assert named <= templates, named - templates


def test_the_pipes_role_allows_what_dagster_k8s_calls():
    """PIPES_CALLS: every call the stand-in API answers in the pod tests (tests/synth/test_pods.py
    checks its run made no other)."""
    (role,) = [doc for _, doc in manifests() if doc["kind"] == "Role"]
    assert PIPES_CALLS <= role_permissions(role)
    (binding,) = [doc for _, doc in manifests() if doc["kind"] == "RoleBinding"]
    run_account = values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": run_account, "namespace": "asagi"}]


def role_permissions(role: dict) -> set[tuple[str, str]]:
    return {(verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_gpu_pod_specs_from_the_cluster_profile_validate():
    config = load_config(CLUSTER_PROFILE)
    assert set(config.gpu_jobs.pods) == {"synthesis", "training", "evaluation", "judge"}
    accounts = {doc["metadata"]["name"] for _, doc in manifests() if doc["kind"] == "ServiceAccount"}
    (claim,) = [doc["metadata"]["name"] for _, doc in manifests() if doc["kind"] == "PersistentVolumeClaim"]
    for kind, pod in config.gpu_jobs.pods.items():
        spec = pod_spec(pod)
        validate(as_pod(spec, pod.image, ["python", "-m", "asagi_dagster.synth"]))
        assert spec["serviceAccountName"] in accounts and spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim, kind
        (container,) = spec["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(pod.gpus)
        assert {"name": "HF_HOME", "value": "/models/huggingface"} in container["env"]


def test_pod_settings_take_pull_secrets_and_plain_env_and_refuse_a_name_twice():
    pod = load_config(CLUSTER_PROFILE).gpu_jobs.pods["synthesis"]
    pod = pod.model_copy(update={"image_pull_secrets": ["registry-credentials"], "env": {"HF_HUB_OFFLINE": "1"}})
    spec = pod_spec(pod)
    validate(as_pod(spec, pod.image, ["python", "-m", "asagi_dagster.synth"]))
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in spec["containers"][0]["env"]
    with pytest.raises(ValueError, match="HF_TOKEN: in both env and secret_env"):
        PodSettings.model_validate({**pod.model_dump(), "env": {"HF_TOKEN": "x"}})


def test_judge_server_manifest_serves_the_profiles_judge_at_its_endpoint():
    config = load_config(CLUSTER_PROFILE)
    deployment, service = judge_manifests(config.evaluation.judge, config.gpu_jobs)
    validate(deployment)
    validate(service)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    judge = config.evaluation.judge
    assert container["command"] == ["vllm", "serve", judge.model]
    assert container["args"][container["args"].index("--revision") + 1] == judge.revision  # the commit it loads
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == str(config.gpu_jobs.pods["judge"].gpus)
    assert judge.endpoint.base_url == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}/v1"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert (service["metadata"]["name"], service["spec"]["ports"][0]["port"]) == (JUDGE_NAME, JUDGE_PORT)


def test_judge_manifest_refuses_an_endpoint_it_would_not_serve():
    config = load_config(CLUSTER_PROFILE)
    endpoint = config.evaluation.judge.endpoint.model_copy(update={"base_url": "https://api.example.com/v1"})
    judge = config.evaluation.judge.model_copy(update={"endpoint": endpoint})
    with pytest.raises(ValueError, match="must be http://vllm-judge"):
        judge_manifests(judge, config.gpu_jobs)


# --- Helm values ---------------------------------------------------------------------


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def test_values_instance_settings_pass_dagsters_own_config_schemas():
    """The chart turns these values into dagster.yaml: run coordinator, run launcher, run
    monitoring. Each, in Dagster's names, must pass the schema Dagster checks it with."""
    daemon = values()["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = {snake(k): v for k, v in coordinator["config"]["queuedRunCoordinator"].items()}
    checked = process_config(QueuedRunCoordinator.config_type(), queued)
    assert checked.success, checked.errors
    monitoring = {snake(k): v for k, v in daemon["runMonitoring"].items()}
    checked = process_config(dagster_instance_config_schema(), {"run_monitoring": monitoring})
    assert checked.success, checked.errors
    # Long enough for a GPU node to be added by the autoscaler.
    assert monitoring["enabled"] and monitoring["start_timeout_seconds"] >= 1800

    launcher = values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = {snake(k): v for k, v in launcher["config"]["k8sRunLauncher"].items()}
    k8s["run_k8s_config"] = {snake(k): v for k, v in k8s["run_k8s_config"].items()}
    k8s["instance_config_map"] = "dagster-instance"  # the chart adds it
    checked = process_config(K8sRunLauncher.config_type(), k8s)
    assert checked.success, checked.errors


def test_values_gpu_tag_limit_applies_to_the_gpu_jobs():
    import asagi_dagster.definitions as code_location

    (limit,) = values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert limit["key"] == GPU_RUN_TAG and "value" not in limit and limit["limit"] >= 1  # every value: all GPU kinds share it
    tagged = {job.name for job in code_location.defs.get_repository_def().get_all_jobs() if GPU_RUN_TAG in job.tags}
    assert {"synthesized_corpora", "translated_datasets", "vlm_training", "evaluate_model"} <= tagged
    assert "web_ingest" not in tagged


def test_values_kubernetes_fields_validate_and_the_code_location_matches_the_project():
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    container = {"name": "grpc", "image": "x", "env": deployment["env"], "volumeMounts": deployment["volumeMounts"], "resources": deployment["resources"]}
    validate(as_pod({"containers": [container], "volumes": deployment["volumes"]}))
    run = values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    validate(as_pod({"containers": [{"name": "run", "image": "x", **run["containerConfig"]}], **run["podSpecConfig"]}))
    module = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert deployment["image"]["tag"] != "latest"
    env = {e["name"]: e for e in deployment["env"]}
    assert env["ASAGI_CONFIG"]["value"].startswith(deployment["volumeMounts"][0]["mountPath"] + "/")
    judge_key = load_config(CLUSTER_PROFILE).evaluation.judge.endpoint.api_key_env
    assert judge_key in env and "value" not in env[judge_key]


# --- images -------------------------------------------------------------------------


def pins(lines: list[str]) -> dict[str, str]:
    """Requirement lines (comments allowed) -> {normalized name: version specifier}."""
    requirements = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {canonicalize_name(r.name): str(r.specifier) for r in requirements}


def test_gpu_worker_requirements_keep_the_projects_pins():
    """The worker image installs the library with --no-deps over gpu-requirements.txt, so
    that file must hold every runtime dependency at the project's own pin, torch aside
    (vllm pins its own CUDA torch)."""
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    worker = pins((K8S / "docker" / "gpu-requirements.txt").read_text().splitlines())
    # The worker runs no Dagster code: dagster, dagster-k8s and the instance storage stay out.
    expected = {name: spec for name, spec in project.items() if name not in ("torch", "dagster", "dagster-k8s", "dagster-postgres")}
    assert {name: worker.get(name) for name in expected} == expected
    assert worker["vllm"] == "==0.33.0" and "torch" not in worker


def test_dockerfiles_copy_what_exists_and_start_the_project():
    for dockerfile in (K8S / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: {source}"
    code = (K8S / "docker" / "code-location.Dockerfile").read_text()
    torch_pin = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])["torch"]
    assert f"torch{torch_pin} --index-url https://download.pytorch.org/whl/cpu" in code
    assert '"--module-name", "asagi_dagster.definitions"' in code
    assert "pip install --no-cache-dir ." in code  # the project's dependencies: dagster-postgres for the chart's storage


def test_the_stand_in_api_refuses_a_pod_the_schema_refuses():
    """The pod tests' bodies (built by dagster-k8s from pod_spec) are validated on create;
    this shows that check is live."""
    from kubernetes import client as k8s

    from tests.fake_kubelet import FakeCoreV1Api

    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="bad"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="main", image="x")], active_deadline_seconds="a day")
    )
    with pytest.raises(k8s.ApiException, match="Pod is invalid"):
        FakeCoreV1Api().create_namespaced_pod("asagi", pod)
