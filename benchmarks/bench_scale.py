"""Registration and inbox automation at crawl scale (issue 18 §1), on simulated shards:
empty files named like a crawl's, in an inbox of N, on a SQLite or a PostgreSQL instance.

For each N (default 1k, 5k, 20k) it times, in one run:
- the sensor's tick that finds all N new files (registers them, asks for one backfill),
- the sensor's steady tick at N (nothing new),
- ``asagi sync`` at N (nothing new) and ``asagi sync`` registering N on a fresh instance,
- the re-sync schedule's tick at N (every shard out of sync: one backfill of N) and the
  next tick (all of them in that unfinished backfill: nothing asked);
then at 90k: 70k registered, 20k new files, the tick that finds them and the steady tick.

With ``--root s3`` (issue 22) the storage root and the inbox are on a moto S3 server on
127.0.0.1 that counts every request it serves, and it times and counts, at 90k shards
registered and ingested (each shard's manifests in the catalog): the re-sync's reads
(the inbox listing and one catalog read), the re-sync schedule's whole tick, and the
sensor's steady tick; and ``asagi report`` (the summary) at 5k shards. Targets: re-sync
tick <= 30 s at 90k, report <= 60 s at 5k, and requests that grow with listing pages
only (1,000 keys a page), not with shards.

Sensor ticks go through the daemon's own iteration (``execute_sensor_iteration``: the
tick runs in a code server, its result is stored as the daemon stores it). The growth
between sizes is fitted as an exponent (time ~ N^k), so a regression to quadratic shows
as k near 2. Targets at 90k: steady tick <= 2 s, tick finding 20k new <= 10 s, sync <= 60 s.

    python -m benchmarks.bench_scale [--sizes 1000 5000 20000] [--storage sqlite|postgres|both] [--no-90k] [--files-per-partition K]
    python -m benchmarks.bench_scale --root s3 [--s3-shards 90000] [--report-shards 5000] [--files-per-partition K]
    python -m benchmarks.bench_scale --backfill 1000 10000 [--shards-per-run 16]
    python -m benchmarks.bench_scale --daemon-ingest 90000 --files-per-partition 100 --shards-per-run 1

``--backfill`` (issue 22 §1) times the backfill daemon's iteration over the sensor's ingest
backfill of N shards, with runs queued and never launched: what one partition per file
costs Dagster before any shard is read. ``--daemon-ingest N`` drops N empty files in the
inbox of a real `dagster-daemon run` and times them registered and ingested, reading
back every tick (how many failed, the longest).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
TARGETS = {"steady sensor tick at 90k": 2.0, "sensor tick finding 20k new at 90k": 10.0, "asagi sync at 90k": 60.0}
S3_TARGETS = {"re-sync schedule tick": 30.0, "asagi report (summary)": 60.0}
S3_BUCKET = "bench-scale"
LISTING_PAGE = 1000  # keys per S3 ListObjectsV2 page


def write_inbox(inbox: Path, first: int, count: int) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + count):
        (inbox / f"CC-MAIN-20261101-{i:06d}.warc.gz").touch()


@contextlib.contextmanager
def deployment(storage: str, postgres_url: str | None, web: dict | None = None, queued_runs: bool = False, max_concurrent_runs: int | None = None):
    """A profile, an inbox and a DAGSTER_HOME for one measurement; the environment points at them.
    ``queued_runs``: runs the daemons create wait in the queue (launched only by a real
    daemon, ``max_concurrent_runs`` at a time)."""
    from tests.conftest import write_profile

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        base = Path(folder)
        profile = write_profile(base, sources={"web": {"sensor_interval_s": 5, **(web or {})}})
        home = base / "dagster_home"
        home.mkdir()
        settings: dict = {"telemetry": {"enabled": False}}
        if queued_runs:
            settings["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
            if max_concurrent_runs:
                settings["run_coordinator"]["config"] = {"max_concurrent_runs": max_concurrent_runs}
        if storage == "postgres":
            settings["storage"] = {"postgres": {"postgres_url": _new_database(postgres_url, base.name)}}
        (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "ASAGI_CONFIG")}
        os.environ.update(DAGSTER_HOME=str(home), ASAGI_CONFIG=str(profile))
        try:
            yield base, profile
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _new_database(server_url: str, name: str) -> str:
    import psycopg2

    database = name.lower().replace("-", "_")
    connection = psycopg2.connect(server_url)
    connection.autocommit = True
    connection.cursor().execute(f"CREATE DATABASE {database}")
    connection.close()
    return server_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + f"/{database}"


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Daemon:
    """The sensor daemon's iteration over this project's code location, tick by tick."""

    def __init__(self, instance, stack: contextlib.ExitStack):
        from dagster._core.test_utils import create_test_daemon_workspace_context
        from dagster._core.workspace.load_target import ModuleTarget

        target = ModuleTarget(module_name="asagi_dagster.definitions", attribute="defs", working_directory=str(PROJECT), location_name="asagi")
        self.workspace = stack.enter_context(create_test_daemon_workspace_context(target, instance))
        self.last_tick = 0.0

    def tick(self) -> float:
        from dagster._daemon.sensor import execute_sensor_iteration

        time.sleep(max(0.0, self.last_tick + 5.5 - time.monotonic()))  # the sensor's minimum interval
        seconds = timed(lambda: list(execute_sensor_iteration(self.workspace, logging.getLogger("bench"), None, None)))
        self.last_tick = time.monotonic()
        return seconds


def resync_tick(profile: Path, instance, hour: int) -> float:
    import dagster as dg

    from asagi_dagster.definitions import build_definitions

    defs = build_definitions(str(profile))
    when = datetime(2026, 11, 1, hour, tzinfo=timezone.utc)
    with dg.build_schedule_context(
        instance=instance, resources=defs.resources, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        return timed(lambda: defs.resolve_schedule_def("warc_inbox_resync").evaluate_tick(context))


def partitions_for(files: int, files_per_partition: int) -> int:
    """Partitions ``files`` new files of one folder make (D111)."""
    return -(-files // files_per_partition)


def measure_size(n: int, storage: str, postgres_url: str | None, files_per_partition: int = 1) -> dict[str, float]:
    import dagster as dg

    from asagi_cli.main import _sync
    from asagi_dagster.config import load_config

    figures = {}
    web = {"files_per_partition": files_per_partition}
    with deployment(storage, postgres_url, web) as (base, profile):
        write_inbox(base / "inbox", 0, n)
        figures["asagi sync registering N"] = timed(lambda: _sync(load_config(profile)))
    with deployment(storage, postgres_url, web) as (base, profile), contextlib.ExitStack() as stack:
        write_inbox(base / "inbox", 0, n)
        instance = stack.enter_context(dg.DagsterInstance.get())
        daemon = Daemon(instance, stack)
        figures["sensor tick finding N new"] = daemon.tick()
        assert len(instance.get_dynamic_partitions("warc_shards")) == partitions_for(n, files_per_partition)
        figures["steady sensor tick at N"] = daemon.tick()
        figures["asagi sync at N, nothing new"] = timed(lambda: _sync(load_config(profile)))
        # The sensor's backfill is finished (as the daemon would mark it) for the re-sync to see N out of sync.
        from dagster._core.execution.backfill import BulkActionStatus

        for backfill in instance.get_backfills():
            instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
        figures["re-sync tick at N, all out of sync"] = resync_tick(profile, instance, 1)
        figures["re-sync tick at N, all in its backfill"] = resync_tick(profile, instance, 2)
    return figures


def measure_90k(storage: str, postgres_url: str | None, files_per_partition: int = 1) -> dict[str, float]:
    import dagster as dg

    from asagi_cli.main import _sync
    from asagi_dagster.config import load_config

    figures = {}
    # One window of the whole inbox (a local scan of 90,000 is well under a second): the tick
    # that finds the 20,000 new files, whichever window they fall in by name (D109).
    web = {"files_per_partition": files_per_partition, "scan_files_per_tick": 100_000}
    with deployment(storage, postgres_url, web) as (base, profile), contextlib.ExitStack() as stack:
        write_inbox(base / "inbox", 0, 70_000)
        _sync(load_config(profile))
        instance = stack.enter_context(dg.DagsterInstance.get())
        daemon = Daemon(instance, stack)
        daemon.tick()  # the sensor's first tick: its state is created
        write_inbox(base / "inbox", 70_000, 20_000)
        figures["sensor tick finding 20k new at 90k"] = daemon.tick()
        assert len(instance.get_dynamic_partitions("warc_shards")) == partitions_for(70_000, files_per_partition) + partitions_for(20_000, files_per_partition)
        figures["steady sensor tick at 90k"] = daemon.tick()
        figures["asagi sync at 90k"] = timed(lambda: _sync(load_config(profile)))
    return figures


def growth(sizes: list[int], by_size: dict[int, dict[str, float]], name: str) -> str:
    """The exponent k of time ~ N^k between consecutive sizes."""
    fits = []
    for small, large in zip(sizes, sizes[1:]):
        a, b = by_size[small][name], by_size[large][name]
        fits.append(f"{math.log(max(b, 1e-3) / max(a, 1e-3)) / math.log(large / small):.2f}")
    return " / ".join(fits)


def report(storage: str, sizes: list[int], by_size: dict[int, dict[str, float]], at_90k: dict[str, float]) -> None:
    names = list(next(iter(by_size.values())))
    print(f"\n## {storage}\n")
    print("| operation | " + " | ".join(f"{n:,}" for n in sizes) + " | growth exponent |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{by_size[n][name]:.2f} s" for n in sizes) + f" | {growth(sizes, by_size, name)} |")
    for name, seconds in at_90k.items():
        target = TARGETS[name]
        print(f"| {name} | {seconds:.2f} s (target <= {target:.0f} s: {'PASS' if seconds <= target else 'FAIL'}) |")


# --- the backfill daemon (issue 22 §1) ---------------------------------------------------------
def measure_backfill(n: int, shards_per_run: int) -> dict[str, float]:
    """The backfill daemon's first iteration over the sensor's ingest backfill of ``n`` new
    shards (``n`` registered): the runs it creates (queued, never launched) and its time."""
    import dagster as dg
    from dagster._daemon.backfill import execute_backfill_iteration

    from assets.web import WARC_SHARDS, submit_ingest_backfill

    with (
        deployment("sqlite", None, web={"shards_per_run": shards_per_run}, queued_runs=True) as (base, _),
        contextlib.ExitStack() as stack,
    ):
        instance = stack.enter_context(dg.DagsterInstance.get())
        keys = [f"CC-MAIN-20261101-{i:06d}.warc.gz" for i in range(n)]
        instance.add_dynamic_partitions(WARC_SHARDS, keys)
        daemon = Daemon(instance, stack)
        (base / "inbox").mkdir()
        daemon.tick()  # the code server up before anything is timed (an empty inbox: nothing asked)
        start = time.perf_counter()
        backfill_id = submit_ingest_backfill(instance, keys, "bench_scale")
        submitted = time.perf_counter() - start
        iterations = []
        while len(iterations) < 3:  # its runs never finish, so it has nothing more to ask after the first
            iterations.append(timed(lambda: list(execute_backfill_iteration(daemon.workspace, logging.getLogger("bench")))))
        runs = instance.get_runs_count(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    return {"submit": submitted, "first iteration": iterations[0], "later iterations": max(iterations[1:]), "runs": runs}


def backfill_table(rows: dict[int, dict[str, float]], shards_per_run: int) -> None:
    print(f"\n## The backfill daemon over an ingest backfill of every shard ({shards_per_run} shards a run, SQLite)\n")
    print("| shards | submit | first iteration | later iterations | runs created | first iteration per run |")
    print("|---|---|---|---|---|---|")
    for n, row in rows.items():
        per_run = row["first iteration"] / max(row["runs"], 1)
        times = f"{row['submit']:.2f} s | {row['first iteration']:.1f} s | {row['later iterations']:.1f} s"
        print(f"| {n:,} | {times} | {row['runs']:,.0f} | {per_run * 1000:.0f} ms |")


# --- N files through a real daemon (issue 22 §1) ------------------------------------------------
_DAEMON_RUNS = """
import json, sys, dagster as dg
instance = dg.DagsterInstance.get()
ticks = {}
for state in instance.all_instigator_state():
    for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
        end = tick.end_timestamp or tick.timestamp
        mine = ticks.setdefault(state.instigator_name, {"ticks": 0, "failed": 0, "longest_s": 0.0, "errors": []})
        mine["ticks"] += 1
        mine["longest_s"] = max(mine["longest_s"], end - tick.timestamp)
        if tick.tick_data.instigator_type.value == "SCHEDULE":  # a schedule's tick is stamped with its scheduled time
            reason = tick.skip_reason or ""
            mine.setdefault("schedule_ticks", []).append({"scheduled": tick.timestamp, "end": end, "status": tick.status.value, "reason": reason[:200]})
        if tick.status.value == "FAILURE":
            mine["failed"] += 1
            mine["errors"].append(str(tick.error.message)[:300] if tick.error else "")
def _shards(backfill):  # a re-filter's or a UI backfill may not hold web_documents
    subset = backfill.asset_backfill_data.target_subset if backfill.asset_backfill_data else None
    shards = subset.partitions_subsets_by_asset_key.get(dg.AssetKey("web_documents")) if subset else None
    return shards.get_partition_keys() if shards is not None else []
runs = instance.get_runs()
failed = []
for run in runs:
    if run.status.value == "FAILURE":
        errors = [e.dagster_event.event_specific_data.error.message for e in instance.all_logs(run.run_id)
                  if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]
        assets = sorted(k.to_user_string() for k in run.asset_selection or ())
        failed.append({"assets": assets, "error": (errors or [""])[0][:400]})
print(json.dumps({
    "failed_runs": failed,
    "partitions": len(instance.get_dynamic_partitions("warc_shards")),
    "runs": len(runs),
    "runs_by_status": {s: sum(1 for r in runs if r.status.value == s) for s in {r.status.value for r in runs}},
    "backfills": [
        {"id": b.backfill_id, "status": b.status.value, "requested_by": b.tags.get("asagi/requested_by", ""), "created": b.backfill_timestamp,
         "shards": len(_shards(b)),
         "runs": instance.get_runs_count(dg.RunsFilter(tags={"dagster/backfill": b.backfill_id}))}
        for b in instance.get_backfills()
    ],
    "ticks": ticks,
}))
"""


def measure_daemon_ingest(n: int, files_per_partition: int, shards_per_run: int, limit_s: float, resync_cron: str) -> dict:
    """``n`` empty files dropped in the inbox of a deployment with `dagster-daemon run`
    (Dagster's own intervals) and two runs at a time: the sensor registers them in
    batches and asks for the ingest backfill; timed until every file's last ingest asset
    is committed (or ``limit_s``), then every tick of every sensor and schedule is read
    back: how many, how many failed, the longest."""
    import json
    import subprocess
    import sys

    from asagi_dagster.config import load_config
    from asagi_sample.site import write_filter_sample
    from assets.web import INGEST_ASSETS

    web = {"files_per_partition": files_per_partition, "shards_per_run": shards_per_run, "sensor_interval_s": 30, "resync_cron": resync_cron}
    with deployment("sqlite", None, web=web, queued_runs=True, max_concurrent_runs=2) as (base, profile):
        write_filter_sample(load_config(profile).filters)  # the document reference the filters automation builds
        write_inbox(base / "inbox", 0, n)
        subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"], check=True, capture_output=True)
        log = open(DAEMON_LOG, "w")  # kept after the run: what each daemon did, and when
        daemon = subprocess.Popen(["dagster-daemon", "run", "-w", "workspace.yaml"], cwd=PROJECT, stdout=log, stderr=log, start_new_session=True)
        done, start, started_at = 0, time.monotonic(), time.time()
        final = base / "data" / INGEST_ASSETS[-1]
        try:
            while done < n and time.monotonic() - start < limit_s:
                time.sleep(30)  # counting the committed manifests stats every file folder
                done = sum(1 for _ in final.glob("*/_manifest.json")) if final.exists() else 0
                print(f"  {time.monotonic() - start:7.0f} s: {done:,} of {n:,} files ingested", flush=True)
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=120)
            log.close()
        wall = time.monotonic() - start
        figures = json.loads(subprocess.run([sys.executable, "-c", _DAEMON_RUNS], check=True, capture_output=True, text=True).stdout)
    return {"files": n, "ingested": done, "wall_s": wall, "started_at": started_at, "evaluations": schedule_evaluations(DAEMON_LOG), **figures}


DAEMON_LOG = Path(tempfile.gettempdir()) / "bench-scale-daemon.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the daemon colours its log even into a file
_EVALUATING = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) - .* - Evaluating schedule `(\w+)` at (.+)$")


def schedule_evaluations(log: Path) -> list[dict]:
    """When the schedule daemon began each evaluation, from its log: a schedule tick is
    stamped with its scheduled time, so its length alone cannot tell a late start from a
    long evaluation."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = _EVALUATING.match(_ANSI.sub("", line))
        if match:
            began, name, scheduled = (match.group(1), match.group(2), match.group(3).strip())
            found.append({"schedule": name, "began": _log_time(began), "scheduled": scheduled})
    return found


def _log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").timestamp()


def daemon_table(row: dict, files_per_partition: int, shards_per_run: int) -> None:
    setting = f"{files_per_partition} files a partition, {shards_per_run} a run, 2 runs at once, SQLite"
    print(f"\n## {row['files']:,} empty files through dagster-daemon ({setting})\n")
    print(f"- ingested: {row['ingested']:,} files in {row['wall_s']:.0f} s ({row['ingested'] / row['wall_s']:.1f} files/s)")
    print(f"- partitions: {row['partitions']:,}; runs: {row['runs']:,} {row['runs_by_status']}; daemon log: {DAEMON_LOG}")
    print("\n| backfill | requested by | created | shards | runs | status |\n|---|---|---|---|---|---|")
    for backfill in sorted(row["backfills"], key=lambda b: b["created"]):
        created = backfill["created"] - row["started_at"]
        print(f"| {backfill['id']} | {backfill['requested_by']} | {created:.0f} s | {backfill['shards']:,} | {backfill['runs']} | {backfill['status']} |")
    print("\n| sensor or schedule | ticks | failed | longest tick |\n|---|---|---|---|")
    for name, ticks in sorted(row["ticks"].items()):
        print(f"| {name} | {ticks['ticks']} | {ticks['failed']} | {ticks['longest_s']:.1f} s |")
    for name, ticks in sorted(row["ticks"].items()):
        for tick in ticks.get("schedule_ticks", []):
            began = [e["began"] for e in row["evaluations"] if e["schedule"] == name and abs(_log_time(e["scheduled"]) - tick["scheduled"]) < 1]
            lag = f"evaluation began {began[0] - tick['scheduled']:.0f} s after" if began else "no evaluation in the daemon's log"
            ended = f"ended {tick['end'] - tick['scheduled']:.0f} s after; {tick['status']}: {tick['reason']}"
            print(f"- {name} tick scheduled at {tick['scheduled'] - row['started_at']:.0f} s: {lag}, {ended}")
        for error in ticks["errors"][:3]:
            print(f"- {name} failed: {error}")
    for run in row["failed_runs"]:
        print(f"- failed run of {', '.join(run['assets'])}: {run['error']}")


# --- S3 (issue 22) ----------------------------------------------------------------------------
def _put_empty(endpoint: str, keys: list[str]) -> None:
    """Empty objects under the inbox prefix, 32 PUTs in flight."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=S3_BUCKET, Key=key, Body=b""), keys, chunksize=256))


def _ingested_catalog(storage, shards: int, fingerprint: str) -> None:
    """Every shard's manifests in the catalog, as after a whole ingest, each web_documents
    source carrying the inbox file's fingerprint (so the re-sync finds all in sync)."""
    import pyarrow as pa

    from asagi_dagster import catalog
    from benchmarks.bench_catalog import SHARD_ASSETS, manifest_for

    now = time.time_ns()
    rows = []
    for i in range(shards):
        for asset in SHARD_ASSETS:
            manifest = manifest_for(storage, asset, i)
            if asset in ("web_documents", "web_images"):
                manifest = manifest.model_copy(update={"source": {**manifest.source, "fingerprint": fingerprint}})
            rows.append(catalog.entry_row(manifest, now, f"{len(rows):032x}"))
        if len(rows) >= 200_000 or i == shards - 1:
            table = pa.Table.from_pylist(rows, schema=catalog.ENTRY_SCHEMA)
            catalog._write_entries(storage, f"{catalog.compacted_dir(storage)}/{now:020d}-{i:032x}.parquet", table)
            rows = []
    catalog.mark_built(storage, shards * len(SHARD_ASSETS))


def measure_s3(shards: int, report_shards: int, files_per_partition: int = 1) -> list[dict]:
    """Time and requests of the re-sync, the sensor and the report on a moto S3 root; the
    shards registered in batches of ``files_per_partition`` (D111: a tick then also reads
    the batch lists of the folders it scans)."""
    import boto3
    import dagster as dg

    from asagi_dagster.report import summary_report
    from asagi_dagster.storage import S3Settings, Storage, StorageSettings
    from asagi_dagster.web.batches import commit_batches, make_batches, registered_files
    from asagi_dagster.web.inbox import Inbox, plan_sync
    from benchmarks.bench_catalog import FINAL_ASSET, SOURCE_ASSET, CountingMotoServer, shard_key
    from tests.conftest import write_profile

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    server = CountingMotoServer()
    server.start()
    rows = []

    def measured(name: str, n: int, step) -> None:
        """``step``'s requests, and its time: its own figure when it returns one (a daemon
        tick waits out the sensor's interval first), else the wall time."""
        result = []
        start = time.perf_counter()
        requests, by_method = server.count(lambda: result.append(step()))
        seconds = result[0] if isinstance(result[0], float) else time.perf_counter() - start
        rows.append({"step": name, "shards": n, "seconds": seconds, "requests": requests, "by_method": dict(by_method)})
        print(f"  {name} at {n:,}: {seconds:.2f} s, {requests:,} requests {dict(by_method)}", flush=True)

    try:
        endpoint = server.endpoint()
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
        s3 = S3Settings(endpoint_url=endpoint)
        keys = [shard_key(i) for i in range(shards)]
        print(f"writing {shards:,} inbox objects and the catalog of {shards:,} ingested shards ...", flush=True)
        _put_empty(endpoint, [f"inbox/{key.replace('__', '/')}" for key in keys])
        inbox = Inbox(f"s3://{S3_BUCKET}/inbox", s3)
        found, _ = inbox.scan()
        assert [f.key for f in found] == sorted(keys), "the inbox's keys are the catalog's"
        storage = Storage(StorageSettings(root=f"s3://{S3_BUCKET}/data", s3=s3))
        _ingested_catalog(storage, shards, found[0].fingerprint)
        batches = make_batches(found, files_per_partition)
        commit_batches(storage, batches)
        partitions = [batch.key for batch in batches]
        with tempfile.TemporaryDirectory(prefix="bench-scale-s3-") as folder, contextlib.ExitStack() as stack:
            base = Path(folder)
            profile = write_profile(
                base,
                storage={"root": f"s3://{S3_BUCKET}/data", "s3": {"endpoint_url": endpoint}, "duckdb_path": None},
                sources={"web": {"inbox": f"s3://{S3_BUCKET}/inbox", "sensor_interval_s": 5, "files_per_partition": files_per_partition}},
            )
            home = base / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
            os.environ.update(DAGSTER_HOME=str(home), ASAGI_CONFIG=str(profile))
            instance = stack.enter_context(dg.DagsterInstance.get())
            for start in range(0, len(partitions), 10_000):
                instance.add_dynamic_partitions("warc_shards", partitions[start : start + 10_000])
            plan = []
            measured(
                "re-sync reads (inbox listing + catalog" + (" + batch lists)" if files_per_partition > 1 else ")"),
                shards,
                lambda: plan.append(plan_sync(inbox, registered_files(storage, partitions), storage, SOURCE_ASSET, FINAL_ASSET)),
            )
            assert not plan[0].new and not plan[0].changed, "every shard in sync"
            measured("re-sync schedule tick", shards, lambda: resync_tick(profile, instance, 1))  # the tick's evaluation, timed
            daemon = Daemon(instance, stack)
            daemon.tick()  # the sensor's first tick: its state is created
            measured("steady sensor tick", shards, daemon.tick)
        report_storage = Storage(StorageSettings(root=f"s3://{S3_BUCKET}/report-{report_shards}", s3=s3))
        _ingested_catalog(report_storage, report_shards, "")
        measured("asagi report (summary)", report_shards, lambda: summary_report(report_storage, None))
    finally:
        server.stop()
    return rows


def s3_table(rows: list[dict], files_per_partition: int) -> None:
    print(f"\n## S3 (moto on 127.0.0.1, every request counted; {files_per_partition} files a partition)\n")
    print("| step | shards | time | requests | requests per listing page of the inbox | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        pages = -(-row["shards"] // LISTING_PAGE)
        target = S3_TARGETS.get(row["step"])
        verdict = f"<= {target:.0f} s: {'PASS' if row['seconds'] <= target else 'FAIL'}" if target else ""
        print(f"| {row['step']} | {row['shards']:,} | {row['seconds']:.2f} s | {row['requests']:,} | {row['requests'] / pages:.2f} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    parser.add_argument("--storage", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-90k", dest="at_90k", action="store_false")
    parser.add_argument("--root", choices=["local", "s3"], default="local", help="s3: the re-sync, sensor and report against moto (issue 22)")
    parser.add_argument("--s3-shards", type=int, default=90_000)
    parser.add_argument("--report-shards", type=int, default=5_000)
    parser.add_argument("--backfill", type=int, nargs="*", metavar="N", help="the backfill daemon's iteration over a backfill of N shards (issue 22 §1)")
    parser.add_argument("--shards-per-run", type=int, default=16)
    parser.add_argument("--files-per-partition", type=int, default=1, help="inbox files a partition holds (D111)")
    parser.add_argument("--daemon-ingest", type=int, metavar="N", help="N empty files registered and ingested through dagster-daemon (issue 22 §1)")
    parser.add_argument("--limit-s", type=float, default=3600, help="--daemon-ingest stops waiting after this")
    # Every 10 minutes, not the profiles' hours: a run of 40 minutes sees the re-sync tick under load several times.
    parser.add_argument("--resync-cron", default="*/10 * * * *", help="--daemon-ingest: the re-sync schedule's cron")
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    if args.daemon_ingest:
        row = measure_daemon_ingest(args.daemon_ingest, args.files_per_partition, args.shards_per_run, args.limit_s, args.resync_cron)
        daemon_table(row, args.files_per_partition, args.shards_per_run)
        return
    if args.backfill:
        backfill_table({n: measure_backfill(n, args.shards_per_run) for n in args.backfill}, args.shards_per_run)
        return
    if args.root == "s3":
        s3_table(measure_s3(args.s3_shards, args.report_shards, args.files_per_partition), args.files_per_partition)
        return
    storages = ["sqlite", "postgres"] if args.storage == "both" else [args.storage]
    with contextlib.ExitStack() as stack:
        postgres_url = None
        if "postgres" in storages:
            from tests.postgres_server import postgres_server

            postgres_url = stack.enter_context(postgres_server())
        for storage in storages:
            by_size = {n: measure_size(n, storage, postgres_url, args.files_per_partition) for n in args.sizes}
            at_90k = measure_90k(storage, postgres_url, args.files_per_partition) if args.at_90k else {}
            report(storage, args.sizes, by_size, at_90k)


if __name__ == "__main__":
    main()
