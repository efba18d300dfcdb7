"""Kubernetes bodies built from the profile's ``gpu_jobs.pods``: the pod spec of each kind
of GPU work (Dagster Pipes adds image, command and its own env), and the judge server
(a vLLM Deployment and Service) that ``evaluation.judge`` points at."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from asagi_dagster.eval.settings import JudgeSettings
from asagi_dagster.settings import ExecutablePath, Strict


class PodSettings(Strict):
    """A Kubernetes pod for one kind of GPU work (cluster profile)."""

    image: str
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu")
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, str]] = []
    secret_env: dict[str, str] = Field({}, description="Environment variable -> 'secret-name/key' of a Kubernetes Secret.")
    env: dict[str, str] = Field({}, description="Plain environment variables (not secrets), e.g. HF_HUB_OFFLINE: '1' with a filled model cache.")
    image_pull_secrets: list[str] = Field([], description="Secrets of type kubernetes.io/dockerconfigjson for a private registry.")
    active_deadline_s: int = Field(24 * 3600, ge=60)
    pod_wait_timeout_s: int = Field(24 * 3600, ge=60, description="How long Dagster waits for the pod, scheduling included.")
    service_account: str | None = None
    model_cache_claim: str | None = Field(
        None, description="A PersistentVolumeClaim mounted at /models as HF_HOME's parent (k8s/cluster/model-cache-pvc.yaml)."
    )

    @field_validator("secret_env")
    @classmethod
    def _secret_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+", ref):
                # The value is not repeated: it may be the secret itself.
                raise ValueError(f"{name}: not a 'secret-name/key' reference (secret values never go in a profile)")
        return value

    @model_validator(mode="after")
    def _env_once(self) -> PodSettings:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"{', '.join(both)}: in both env and secret_env")
        return self


class GpuJobSettings(Strict):
    """Where GPU work runs: a local subprocess (embedded default) or a pod per run."""

    runner: Literal["subprocess", "k8s"] = "subprocess"
    python: ExecutablePath | None = Field(
        None,
        description=(
            "Interpreter for the subprocess runner, e.g. ../.venv-vllm/bin/python (built by "
            "scripts/vllm_cpu_env.sh) for vLLM on CPU; default: the one running Dagster."
        ),
    )
    namespace: str = "dagster"
    poll_interval_s: float = Field(10.0, gt=0, description="How often Dagster polls the Kubernetes API for a pod's state.")
    pods: dict[Literal["synthesis", "training", "evaluation", "judge"], PodSettings] = {}

    @model_validator(mode="after")
    def _pods_for_k8s(self) -> GpuJobSettings:
        if self.runner == "k8s" and "synthesis" not in self.pods:
            raise ValueError("runner k8s needs pods.synthesis (image, GPUs, ...)")
        return self


MODEL_CACHE_MOUNT = "/models"
JUDGE_NAME = "vllm-judge"
JUDGE_PORT = 8000


def pod_spec(pod: PodSettings) -> dict:
    """The pod spec (minus image and command, which Pipes sets) for one kind of GPU work.
    Retries are Dagster's (RetryPolicy), never the pod's: restartPolicy stays Never."""
    resources = {"cpu": pod.cpu, "memory": pod.memory}
    if pod.gpus:
        resources["nvidia.com/gpu"] = str(pod.gpus)
    env: list[dict] = [{"name": name, "value": value} for name, value in sorted(pod.env.items())]
    for name, ref in sorted(pod.secret_env.items()):
        secret, _, key = ref.partition("/")
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    container: dict = {"resources": {"requests": resources, "limits": resources}, "env": env}
    spec: dict = {
        "containers": [container],
        "activeDeadlineSeconds": pod.active_deadline_s,
        "nodeSelector": dict(pod.node_selector),
        "tolerations": [dict(t) for t in pod.tolerations],
    }
    if pod.model_cache_claim:
        # Weights are downloaded once into the shared claim, not once per pod.
        env.append({"name": "HF_HOME", "value": f"{MODEL_CACHE_MOUNT}/huggingface"})
        container["volumeMounts"] = [{"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT}]
        spec["volumes"] = [{"name": "model-cache", "persistentVolumeClaim": {"claimName": pod.model_cache_claim}}]
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in pod.image_pull_secrets]
    return spec


def judge_manifests(judge: JudgeSettings | None, gpu_jobs: GpuJobSettings) -> list[dict]:
    """A Deployment serving ``evaluation.judge.model`` with ``vllm serve`` on the
    ``gpu_jobs.pods.judge`` pod, and the Service that ``evaluation.judge.endpoint`` names."""
    pod = gpu_jobs.pods.get("judge")
    if judge is None or pod is None:
        raise ValueError("a judge server needs evaluation.judge (its model) and gpu_jobs.pods.judge (its pod)")
    namespace = gpu_jobs.namespace
    endpoint = urlsplit(judge.endpoint.base_url)
    if (endpoint.hostname or "").split(".")[0] != JUDGE_NAME or endpoint.port != JUDGE_PORT:
        raise ValueError(
            f"evaluation.judge.endpoint.base_url must be http://{JUDGE_NAME}.{namespace}.svc:{JUDGE_PORT}/v1 "
            f"to reach the judge server (got {judge.endpoint.base_url})"
        )
    spec = pod_spec(pod)
    spec.pop("activeDeadlineSeconds")  # a server, not a job
    (container,) = spec["containers"]
    container.update(
        name="vllm",
        image=pod.image,
        command=["vllm", "serve", judge.model],
        args=[
            "--served-model-name",
            judge.endpoint.served_model or judge.model,
            "--port",
            str(JUDGE_PORT),
            "--tensor-parallel-size",
            str(max(1, pod.gpus)),
            *(["--revision", judge.revision] if judge.revision else []),
        ],
        ports=[{"name": "http", "containerPort": JUDGE_PORT}],
        readinessProbe={"httpGet": {"path": "/health", "port": JUDGE_PORT}, "periodSeconds": 10, "failureThreshold": 3},
        # Loading a large judge takes minutes; the probe waits up to 30.
        startupProbe={"httpGet": {"path": "/health", "port": JUDGE_PORT}, "periodSeconds": 10, "failureThreshold": 180},
    )
    if judge.endpoint.api_key_env:  # the server checks the key the clients send
        container["env"].append({"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "judge-api", "key": "api_key"}}})
    labels = {"app.kubernetes.io/name": JUDGE_NAME, "app.kubernetes.io/part-of": "asagi-dagster"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": JUDGE_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": JUDGE_NAME, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": JUDGE_PORT, "targetPort": JUDGE_PORT}]},
    }
    return [deployment, service]
