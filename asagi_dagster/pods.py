"""Kubernetes bodies built from the profile's ``gpu_jobs.pods``: the pod spec of each kind
of GPU work (Dagster Pipes adds image, command and its own env), and the judge server
(a vLLM Deployment and Service) that ``evaluation.judge`` points at."""

from __future__ import annotations

from urllib.parse import urlsplit

from asagi_dagster.config import AsagiConfig, PodSettings

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


def judge_manifests(config: AsagiConfig) -> list[dict]:
    """A Deployment serving ``evaluation.judge.model`` with ``vllm serve`` on the
    ``gpu_jobs.pods.judge`` pod, and the Service that ``evaluation.judge.endpoint`` names."""
    judge = config.evaluation.judge if config.evaluation else None
    pod = config.gpu_jobs.pods.get("judge")
    if judge is None or pod is None:
        raise ValueError("a judge server needs evaluation.judge (its model) and gpu_jobs.pods.judge (its pod)")
    namespace = config.gpu_jobs.namespace
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
