"""Where GPU work runs: ``python -m asagi_dagster.<stage>`` through Dagster Pipes, as a
local subprocess (embedded default) or a Kubernetes pod (cluster profile), chosen by
the profile's ``gpu_jobs.runner``. Both return the custom messages the program sent."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import dagster as dg

from asagi_dagster.pods import GpuJobSettings, pod_spec

# Runs of the jobs that start GPU pods carry this tag (value: the kind of GPU work); the
# cluster's QueuedRunCoordinator limits how many such runs hold GPUs at once
# (tagConcurrencyLimits in k8s/helm/values.yaml).
GPU_RUN_TAG = "asagi/gpu"


def gpu_run_tags(kind: str) -> dict[str, str]:
    return {GPU_RUN_TAG: kind}


def launcher(module: str, processes: int | None) -> list[str]:
    """Arguments after the interpreter: the module itself, or torchrun starting it on
    ``processes`` local workers (one node; multi-node runs use k8s/training/)."""
    if processes is None:
        return ["-m", module]
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", module]


class GpuJobsResource(dg.ConfigurableResource):
    """Runs a library stage under Pipes; ``settings`` is the profile's ``gpu_jobs``."""

    settings_json: str  # GpuJobSettings as JSON (resources take plain config values)

    @property
    def settings(self) -> GpuJobSettings:
        return GpuJobSettings.model_validate_json(self.settings_json)

    def run(self, context: dg.AssetExecutionContext, kind: str, module: str, extras: dict, local_processes: int | None = None) -> Sequence:
        """Run ``python -m module``; with ``local_processes`` it is distributed work
        launched by torchrun: that many processes locally, one per GPU in a pod."""
        settings = self.settings
        if settings.runner == "subprocess":  # a pod runs its image's python
            python = settings.python or sys.executable
            command = [python, *launcher(module, local_processes)]
            # torchrun sets one thread per process when this is unset, and prints a banner saying so.
            env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if local_processes else None
            invocation = dg.PipesSubprocessClient(env=env).run(context=context, command=command, extras=extras)
        else:
            processes = max(1, settings.pods[kind].gpus) if local_processes and kind in settings.pods else None
            command = ["python", *launcher(module, processes)]
            invocation = self.k8s_client().run(**self.k8s_run_args(context, kind, command, extras))
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
