"""Where GPU work runs: ``python -m asagi_dagster.<stage>`` through Dagster Pipes, as a
local subprocess (embedded default) or a Kubernetes pod (cluster profile), chosen by
the profile's ``gpu_jobs.runner``. Both return the custom messages the program sent."""

from __future__ import annotations

import sys

import dagster as dg

from asagi_dagster.config import GpuJobSettings, PodSettings


def pod_spec(pod: PodSettings) -> dict:
    """The pod spec (minus image and command, which Pipes sets) for one kind of GPU work.
    Retries are Dagster's (RetryPolicy), never the pod's: restartPolicy stays Never."""
    resources = {"cpu": pod.cpu, "memory": pod.memory}
    if pod.gpus:
        resources["nvidia.com/gpu"] = str(pod.gpus)
    env = []
    for name, ref in sorted(pod.secret_env.items()):
        secret, _, key = ref.partition("/")
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    spec: dict = {
        "containers": [{"resources": {"requests": resources, "limits": resources}, "env": env}],
        "activeDeadlineSeconds": pod.active_deadline_s,
        "nodeSelector": dict(pod.node_selector),
        "tolerations": [dict(t) for t in pod.tolerations],
    }
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    return spec


class GpuJobsResource(dg.ConfigurableResource):
    """Runs a library stage under Pipes; ``settings`` is the profile's ``gpu_jobs``."""

    settings_json: str  # GpuJobSettings as JSON (resources take plain config values)

    @property
    def settings(self) -> GpuJobSettings:
        return GpuJobSettings.model_validate_json(self.settings_json)

    def run(self, context: dg.AssetExecutionContext, kind: str, module: str, extras: dict) -> list:
        settings = self.settings
        if settings.runner == "subprocess":  # a pod runs its image's python
            python = settings.python or sys.executable
            invocation = dg.PipesSubprocessClient().run(context=context, command=[python, "-m", module], extras=extras)
        else:
            invocation = self.k8s_client().run(**self.k8s_run_args(context, kind, ["python", "-m", module], extras))
        return invocation.get_custom_messages()

    def k8s_client(self):
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient(load_incluster_config=True, poll_interval=self.settings.poll_interval_s)

    def k8s_run_args(self, context, kind: str, command: list[str], extras: dict) -> dict:
        settings = self.settings
        if kind not in settings.pods:
            raise dg.DagsterInvariantViolationError(f"gpu_jobs.pods has no {kind!r} entry: the profile must say how to run {kind} pods")
        pod = settings.pods[kind]
        return {
            "context": context,
            "extras": extras,
            "image": pod.image,
            "command": command,
            "namespace": settings.namespace,
            "base_pod_meta": {"labels": {"asagi/kind": kind}},
            "base_pod_spec": pod_spec(pod),
            "pod_wait_timeout": float(pod.pod_wait_timeout_s),
        }
