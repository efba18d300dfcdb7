"""A stand-in for the Kubernetes API, because no cluster can run here: the only mock in
the pod-path tests. It answers the CoreV1Api calls dagster-k8s makes for a Pipes
pod, and it really runs the pod: the first container's command as a local process,
with only the pod's env (literal values and Secret references resolved from
``secrets``) on top of what the image would hold (PATH, HOME, the code, the model
cache). Its merged stdout/stderr come back as the pod log, with kubelet timestamps, so
Dagster's own log reader and Pipes message parsing run unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
from kubernetes import client as k8s

PROJECT = Path(__file__).resolve().parents[1]
IMAGE_ENV = ("PATH", "HOME", "ASAGI_MODEL_CACHE", "TMPDIR")  # what the image provides; nothing else leaks in
KUBERNETES = "1.33.0"  # the schema version the manifests in k8s/ are validated against
# The (RBAC verb, resource) of each call this stand-in answers: all dagster-k8s's Pipes
# client makes (any other would fail the pod tests), so all the Pipes Role must allow.
PIPES_CALLS = {("create", "pods"), ("list", "pods"), ("get", "pods/log"), ("list", "events"), ("delete", "pods")}


class FakePod:
    def __init__(self, namespace: str, body: k8s.V1Pod, secrets: dict[tuple[str, str], str]):
        self.namespace = namespace
        self.body = body
        container = body.spec.containers[0]
        command = [sys.executable if part == "python" else part for part in container.command]
        env = {name: os.environ[name] for name in IMAGE_ENV if name in os.environ}
        env["PYTHONPATH"] = str(PROJECT)  # the image's code
        for var in container.env or []:
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                env[var.name] = secrets[(ref.name, ref.key)]  # a missing Secret is a test bug: KeyError
            else:
                env[var.name] = var.value
        self.lines: list[bytes] = []
        self.deleted = False
        self._last_ns = 0
        self.process = subprocess.Popen(command, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(f"{self._timestamp()} ".encode() + line)

    def _timestamp(self) -> str:
        # Kubelet style, nanoseconds, strictly increasing (equal stamps would merge lines).
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        seconds, nanos = divmod(now, 1_000_000_000)
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"

    @property
    def finished(self) -> bool:
        return self.process.poll() is not None and not self._reader.is_alive()

    def status(self) -> k8s.V1PodStatus:
        code = self.process.poll()
        if code is None:
            state, ready = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()), True
        else:
            state, ready = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code)), False
        container = self.body.spec.containers[0]
        return k8s.V1PodStatus(
            phase="Running" if code is None else ("Succeeded" if code == 0 else "Failed"),
            container_statuses=[k8s.V1ContainerStatus(name=container.name, image=container.image, image_id="", ready=ready, restart_count=0, state=state)],
        )


class FakeCoreV1Api:
    def __init__(self, secrets: dict[tuple[str, str], str] | None = None):
        self.secrets = secrets or {}
        self.pods: dict[str, FakePod] = {}
        self.calls: set[tuple[str, str]] = set()  # (RBAC verb, resource) of every call, for the Role's test

    def create_namespaced_pod(self, namespace: str, body: k8s.V1Pod):
        self.calls.add(("create", "pods"))
        # As the API server would, refuse a pod that does not fit the Kubernetes schema.
        manifest = {"apiVersion": "v1", "kind": "Pod", **k8s.ApiClient().sanitize_for_serialization(body)}
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise k8s.ApiException(status=422, reason=f"Pod is invalid: {exc.message}") from None
        self.pods[body.metadata.name] = FakePod(namespace, body, self.secrets)
        return body

    def list_namespaced_pod(self, namespace: str, field_selector: str):
        self.calls.add(("list", "pods"))
        name = field_selector.removeprefix("metadata.name=")
        pod = self.pods.get(name)
        items = (
            [] if pod is None or pod.deleted or pod.namespace != namespace else [k8s.V1Pod(metadata=pod.body.metadata, spec=pod.body.spec, status=pod.status())]
        )
        return k8s.V1PodList(items=items)

    def read_namespaced_pod_log(self, name: str, namespace: str, follow: bool = False, tail_lines: int | None = None, **_):
        """Followed: a stream of log chunks until the pod ends (what Pipes reads). Else the
        raw response dagster-k8s reads ``.data`` from, for a failed pod's debug info."""
        self.calls.add(("get", "pods/log"))
        pod = self.pods[name]
        if follow:
            return self._follow(pod)
        return SimpleNamespace(data=b"".join(pod.lines[-tail_lines:] if tail_lines else pod.lines))

    @staticmethod
    def _follow(pod: FakePod):
        sent = 0
        while True:
            while sent < len(pod.lines):
                yield pod.lines[sent]
                sent += 1
            if pod.finished and sent == len(pod.lines):
                return
            time.sleep(0.05)

    def list_namespaced_event(self, namespace: str, field_selector: str):
        self.calls.add(("list", "events"))
        return k8s.CoreV1EventList(items=[])

    def delete_namespaced_pod(self, name: str, namespace: str, **_):
        self.calls.add(("delete", "pods"))
        pod = self.pods[name]
        if pod.process.poll() is None:
            pod.process.kill()
        pod.deleted = True


def serve_pods(monkeypatch, secrets: dict[tuple[str, str], str]) -> FakeCoreV1Api:
    """Make dagster-k8s's PipesK8sClient talk to a FakeCoreV1Api holding ``secrets``."""
    import kubernetes
    from dagster_k8s.client import DagsterKubernetesClient

    api = FakeCoreV1Api(secrets)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(
        DagsterKubernetesClient,
        "production_client",
        staticmethod(lambda *a, **k: DagsterKubernetesClient(batch_api=None, core_api=api, logger=lambda m: None, sleeper=time.sleep, timer=time.time)),
    )
    return api
