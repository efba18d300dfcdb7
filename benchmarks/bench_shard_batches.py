"""Many shards per run against one run per shard (issue 18 §1), through a real
``dagster-daemon``: the inbox sensor registers N shards and asks for one backfill, whose
runs take ``sources.web.shards_per_run`` shards each. Each size runs on a fresh instance
with the project's instance settings, side by side in one invocation.

The shards are copies of the sample's first WARC (its images are captured in the WARC,
so nothing is downloaded): small, so what is measured is mostly each run's fixed cost
(queue, process start, code load, instance writes), the thing batching removes. Printed:
runs, wall time from the backfill's creation to its last run's end, the runs' own time
(start to end, summed), both per shard, and their ratios between one shard per run and
each batch size. Then the cost of a range run that grows with the registered shards: an
in-process ``web_ingest`` over the sample's three shards with 0 and 90,000 others registered.

    python -m benchmarks.bench_shard_batches [--shards 48] [--per-run 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

_STATUS = """
import json, dagster as dg
instance = dg.DagsterInstance.get()
out = []
for b in instance.get_backfills():
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": b.backfill_id}))
    out.append({"status": b.status.value, "created": b.backfill_timestamp, "runs": len(runs),
                "ok": sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs),
                "ended": max((instance.get_run_record_by_id(r.run_id).end_time or 0 for r in runs), default=0),
                "run_s": sum((rec.end_time or 0) - (rec.start_time or 0) for rec in map(instance.get_run_record_by_id, (r.run_id for r in runs)))})
print(json.dumps(out))
"""


def measure(shards: int, per_run: int, warc: Path, timeout_s: float) -> dict:
    from asagi_cli.main import INSTANCE_SETTINGS
    from tests.conftest import write_profile

    with tempfile.TemporaryDirectory(prefix="bench-batches-") as folder:
        base = Path(folder)
        profile = write_profile(base, sources={"web": {"sensor_interval_s": 5, "shards_per_run": per_run}})
        home = base / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_SETTINGS)
        inbox = base / "inbox"
        inbox.mkdir()
        for i in range(shards):
            shutil.copy(warc, inbox / f"CC-MAIN-20261101-{i:05d}.warc.gz")
        env = {**os.environ, "ASAGI_CONFIG": str(profile), "DAGSTER_HOME": str(home)}
        # The instance's tables first: the daemon and the first poll creating them at once race.
        subprocess.run([sys.executable, "-c", _STATUS], env=env, cwd=PROJECT, capture_output=True, check=True)
        log = (base / "daemon.log").open("w")
        daemon = subprocess.Popen(
            ["dagster-daemon", "run", "-w", "workspace.yaml"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if daemon.poll() is not None:
                    raise RuntimeError(f"dagster-daemon ended ({daemon.returncode}): {(base / 'daemon.log').read_text()[-3000:]}")
                polled = subprocess.run([sys.executable, "-c", _STATUS], env=env, cwd=PROJECT, capture_output=True, text=True)
                if polled.returncode:  # e.g. the instance's tables while the daemon creates them
                    print(f"polling failed, tried again: {polled.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                else:
                    status = json.loads(polled.stdout)
                    if status and all(b["status"] not in ("REQUESTED", "CANCELING") for b in status):
                        break
                time.sleep(3)
            else:
                raise TimeoutError(f"{shards} shards at {per_run} per run: the backfill did not end in {timeout_s} s")
        finally:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=120)
            log.close()
    [backfill] = status
    wall = backfill["ended"] - backfill["created"]
    return {
        "per_run": per_run,
        "status": backfill["status"],
        "runs": backfill["runs"],
        "ok": backfill["ok"],
        "wall_s": wall,
        "s_per_shard": wall / shards,
        "run_s_per_shard": backfill["run_s"] / shards,
    }


def range_run_seconds(inbox: Path, registered: int) -> float:
    """An in-process run of ``web_ingest`` over the sample's three shards, with
    ``registered`` more shards registered: Dagster resolves a range of dynamic partitions
    by loading every registered key, so a range run's cost grows with the registered count."""
    import dagster as dg

    from asagi_dagster.definitions import build_definitions
    from tests.conftest import write_profile

    shards = sorted(p.name for p in inbox.iterdir())
    with tempfile.TemporaryDirectory(prefix="bench-batches-range-") as folder:
        profile = write_profile(Path(folder), sources={"web": {"inbox": str(inbox)}})
        defs = build_definitions(str(profile))
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("warc_shards", shards)
            for first in range(0, registered, 10_000):
                instance.add_dynamic_partitions("warc_shards", [f"other-{i:06d}.warc.gz" for i in range(first, min(registered, first + 10_000))])
            tags = {"dagster/asset_partition_range_start": shards[0], "dagster/asset_partition_range_end": shards[-1]}
            started = time.perf_counter()
            result = defs.resolve_job_def("web_ingest").execute_in_process(
                instance=instance, tags=tags, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            )
            elapsed = time.perf_counter() - started
            assert result.success
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=48)
    parser.add_argument("--per-run", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--registered", type=int, nargs="+", default=[0, 90_000], help="other shards registered for the range-run timing")
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT))
    from asagi_sample.site import write_sample

    with tempfile.TemporaryDirectory(prefix="bench-batches-sample-") as folder:
        sample_inbox, served = Path(folder) / "inbox", Path(folder) / "served"
        served.mkdir()
        write_sample(sample_inbox, served, "http://127.0.0.1:9")  # the first shard's images are in its WARC
        results = [measure(args.shards, per_run, sample_inbox / "sample-00000.warc.gz", args.timeout) for per_run in args.per_run]
        lookups = {n: range_run_seconds(sample_inbox, n) for n in args.registered}
    print(f"{args.shards} shards, load average {os.getloadavg()[0]:.1f}")
    print(f"{'per run':>8} {'runs':>5} {'ok':>4} {'status':>18} {'wall s':>8} {'wall s/shard':>13} {'run s/shard':>12}")
    for r in results:
        print(f"{r['per_run']:>8} {r['runs']:>5} {r['ok']:>4} {r['status']:>18} {r['wall_s']:>8.1f} {r['s_per_shard']:>13.2f} {r['run_s_per_shard']:>12.2f}")
    base = results[0]
    for r in results[1:]:
        print(
            f"{base['per_run']} per run / {r['per_run']} per run: wall time per shard {base['s_per_shard'] / r['s_per_shard']:.2f}x, "
            f"run time per shard (start to end, summed over runs) {base['run_s_per_shard'] / r['run_s_per_shard']:.2f}x"
        )
    for registered, seconds in lookups.items():
        print(f"in-process web_ingest over the 3 sample shards with {registered:,} other shards registered: {seconds:.2f} s")


if __name__ == "__main__":
    main()
