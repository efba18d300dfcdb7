"""Runs whose worker process is gone, for instances that run their runs on this machine.

A run whose worker is killed (SIGKILL, the OOM killer, a reboot) never reports its end:
it stays STARTED. On Kubernetes the daemon's run monitoring asks the K8sRunLauncher about
the run's pod and fails the run. The local DefaultRunLauncher offers no such check
(Dagster 1.13: ``supports_check_run_worker_health`` is False), and a run of ``asagi
ingest`` (``execute_in_process``) has no launcher at all; so for these the worker's
process id, which the run's RUN_START event records, is looked up here.
"""

from __future__ import annotations

import os

import dagster as dg

# /proc gives a process's start in clock ticks after a boot time rounded to the second.
_START_SLACK_S = 5.0


def fail_runs_with_gone_workers(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """Mark failed, as run monitoring would, the STARTED runs among ``runs`` whose worker
    process is gone; return them. Only where runs execute on this machine."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # run pods or containers elsewhere: their launcher's run monitoring decides
    failed = []
    for run in runs:
        if run.status != dg.DagsterRunStatus.STARTED:
            continue  # queued ones wait for the daemon; stuck starts hit run monitoring's start timeout
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        if not starts or starts[-1].dagster_event is None or starts[-1].dagster_event.pid is None:
            continue  # nothing tells which process runs it: it stays in flight
        pid, started_at = starts[-1].dagster_event.pid, starts[-1].timestamp  # the latest worker
        if process_alive_since(pid, started_at):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is not None and current.status == dg.DagsterRunStatus.STARTED:
            instance.report_run_failed(current, f"The run's worker process (pid {pid}) is gone without reporting an end (killed?): marked failed.")
            failed.append(current)
    return failed


def process_alive_since(pid: int, since: float) -> bool:
    """Whether process ``pid`` runs and was started by ``since`` (a Unix time). A process
    that took the pid over later (after a reboot, or once pids wrap) is not the one asked
    about; a zombie (killed, not yet reaped) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    state = _proc_state(pid)
    if state is None:  # no /proc (macOS): existence is all there is to go on
        return True
    status, started = state
    return status != "Z" and started <= since + _START_SLACK_S


def _proc_state(pid: int) -> tuple[str, float] | None:
    """A process's state letter and start (Unix time), from Linux's /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # fields 3 and 22 of proc(5)
