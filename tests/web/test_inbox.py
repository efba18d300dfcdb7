"""The WARC inbox: which files become shards and under which keys, what is skipped and
why, and the re-sync after an ingest whose process was killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

from asagi_dagster.config import load_config
from asagi_dagster.storage import S3Settings
from asagi_dagster.web.inbox import MAX_KEY_CHARS, Inbox
from tests.conftest import BUCKET, PROJECT, backfill_shards, resync_tick, write_profile

ASAGI = [sys.executable, "-m", "asagi_cli"]
WARC = b"WARC/1.0\r\nWARC-Type: warcinfo\r\nContent-Length: 0\r\n\r\n\r\n\r\n"


def scan(inbox: Path):
    shards, skipped = Inbox(str(inbox), S3Settings()).scan()
    return {s.key: s for s in shards}, {s.path: s.why for s in skipped}


def test_a_key_too_long_for_a_folder_name_is_skipped_with_the_reason(tmp_path):
    inbox = tmp_path / "inbox"
    deep = inbox / ("crawl-2026-" + "x" * 90) / ("segment-" + "y" * 90) / ("part-" + "z" * 90)
    deep.mkdir(parents=True)
    (deep / "CC-MAIN-00001.warc.gz").write_bytes(WARC)
    # The longest key allowed: the folder names joined by "__".
    fits = inbox / ("a" * 100)
    fits.mkdir()
    (fits / ("b" * (MAX_KEY_CHARS - 100 - len("__") - len(".warc")) + ".warc")).write_bytes(WARC)
    shards, skipped = scan(inbox)
    assert [len(k) for k in shards] == [MAX_KEY_CHARS]
    ((path, why),) = skipped.items()
    assert path.endswith("/CC-MAIN-00001.warc.gz")
    assert f"partition key would be {len(path.replace('/', '__'))} characters" in why and f"over the {MAX_KEY_CHARS}" in why


def test_names_are_checked_whole_and_suffixes_in_any_case(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "batch\n").mkdir(parents=True)
    (inbox / "batch\n" / "a.warc").write_bytes(WARC)  # "$" matched before this newline
    (inbox / "trailing.warc\n").write_bytes(WARC)
    (inbox / "UPPER.WARC.GZ").write_bytes(WARC)
    (inbox / "Mixed.Warc").write_bytes(WARC)
    (inbox / "crawl.warc.lz4").write_bytes(WARC)  # FastWARC reads LZ4 and zstd WARCs too
    (inbox / "crawl.warc.zst").write_bytes(WARC)
    (inbox / "notes.txt").write_bytes(b"not a shard")
    shards, skipped = scan(inbox)
    assert sorted(shards) == ["Mixed.Warc", "UPPER.WARC.GZ", "crawl.warc.lz4", "crawl.warc.zst"]
    assert set(skipped) == {"batch\n/a.warc", "trailing.warc\n"}
    assert all("letters, digits" in why for why in skipped.values())
    inbox_ = Inbox(str(inbox), S3Settings())
    with inbox_.open("UPPER.WARC.GZ") as f:
        assert f.read() == WARC


def test_links_out_of_the_inbox_are_skipped_and_never_read(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.warc").write_bytes(b"not yours")
    (inbox / "real.warc").write_bytes(WARC)
    (inbox / "leak.warc").symlink_to(outside / "secret.warc")
    (inbox / "elsewhere").symlink_to(outside)  # a folder outside
    (inbox / "sub" / "alias.warc").symlink_to(inbox / "real.warc")  # stays inside: followed
    (inbox / "sub" / "loop").symlink_to(inbox)  # a folder inside: its files are scanned where they are
    (inbox / "gone.warc").symlink_to(inbox / "deleted.warc")
    shards, skipped = scan(inbox)
    assert sorted(shards) == ["real.warc", "sub__alias.warc"]
    assert skipped == {
        "leak.warc": f"a symbolic link to {outside / 'secret.warc'}, outside the inbox: not followed",
        "elsewhere": f"a symbolic link to {outside}, outside the inbox: not followed",
        "gone.warc": "not a regular file (a dangling link, a pipe or a device)",
    }
    box = Inbox(str(inbox), S3Settings())
    # The sensor's scan, which stats no file, finds and skips the same files.
    quick, quick_skipped = box.scan(fingerprints=False)
    assert [s.key for s in quick] == sorted(shards) and {s.path: s.why for s in quick_skipped} == skipped
    assert {s.fingerprint for s in quick} == {""}
    # A link's fingerprint is its target's, at scan and at ingest alike (else it re-syncs forever).
    assert shards["sub__alias.warc"].fingerprint == box.fingerprint("sub__alias.warc") == shards["real.warc"].fingerprint
    # A shard turned into a link out of the inbox after the scan is not read through.
    (inbox / "real.warc").unlink()
    (inbox / "real.warc").symlink_to(outside / "secret.warc")
    with pytest.raises(ValueError, match="outside the inbox: not read"):
        box.open("real.warc")


def test_s3_inbox_takes_any_case_and_skips_long_keys(s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    # A folder of its own: moto keeps one bucket state per process, and other tests fill inbox/.
    for name in ("UPPER.WARC.GZ", "ok.warc", f"{'d' * 150}/{'e' * 100}.warc", "readme.txt"):
        client.put_object(Bucket=BUCKET, Key=f"case-inbox/{name}", Body=WARC)
    shards, skipped = Inbox(f"s3://{BUCKET}/case-inbox", S3Settings(endpoint_url=s3_endpoint)).scan()
    assert [s.key for s in shards] == ["UPPER.WARC.GZ", "ok.warc"]
    assert [s.path for s in skipped] == [f"{'d' * 150}/{'e' * 100}.warc"] and "257 characters" in skipped[0].why


def test_asagi_sync_lists_what_it_skips_and_registers_the_rest(tmp_path):
    profile = write_profile(tmp_path)
    inbox = tmp_path / "inbox"
    nested = inbox / ("y" * 120) / ("z" * 120)
    nested.mkdir(parents=True)
    (nested / "crawl.warc.gz").write_bytes(WARC)
    (inbox / "UPPER.WARC.GZ").write_bytes(WARC)
    env = {**os.environ, "ASAGI_CONFIG": str(profile), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    sync = subprocess.run([*ASAGI, "sync"], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr[-2000:]
    assert sync.stdout.split("\n")[0] == "added UPPER.WARC.GZ"
    assert f"skipped {'y' * 120}/{'z' * 120}/crawl.warc.gz: its partition key would be 257 characters" in sync.stderr


# --- re-sync after a killed ingest ------------------------------------------------------

SHARD = "sample-00001.warc.gz"  # its pages link images off the WARC: pair_images downloads them


def test_resync_requests_a_shard_whose_ingest_was_killed(tmp_path, served_dir):
    """kill -9 of an ingest leaves its run STARTED for good; the next re-sync tick sees its
    worker is gone, marks the run failed and requests the shard again."""
    import dagster as dg

    from asagi_dagster.definitions import build_definitions
    from asagi_sample.site import write_sample

    silent = socket.socket()  # accepts connections, never answers: the ingest waits there
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    downloader = {"read_timeout_s": 600, "total_timeout_s": 600, "retries": 0}
    profile = write_profile(tmp_path, sources={"web": {"downloader": downloader}})
    write_sample(Path(load_config(profile).sources.web.inbox), served_dir, f"http://127.0.0.1:{silent.getsockname()[1]}")
    home = tmp_path / "dagster_home"
    env = {**os.environ, "ASAGI_CONFIG": str(profile), "DAGSTER_HOME": str(home)}
    subprocess.run([*ASAGI, "sync"], env=env, cwd=PROJECT, check=True, capture_output=True, timeout=120)
    ingest = subprocess.Popen([*ASAGI, "ingest", "--partition", SHARD], env=env, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    defs = build_definitions(str(profile))
    ticks = iter(datetime(2026, 11, 1, hour, tzinfo=timezone.utc) for hour in range(24))
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # The CLI's new instance has run monitoring on, for the daemon to apply.
            assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds > 0

            def requested() -> list[str]:
                return resync_tick(defs, instance, next(ticks))

            run = _wait_for_step(instance, "pair_images", ingest, deadline_s=120)
            assert SHARD not in requested()  # alive: in flight, left alone
            ingest.send_signal(signal.SIGKILL)
            ingest.wait(timeout=30)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nothing else notices
            os.utime(Path(load_config(profile).sources.web.inbox) / SHARD)  # the file changes meanwhile
            assert SHARD in requested()
            failed = instance.get_run_by_id(run.run_id)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert f"worker process (pid {ingest.pid}) is gone" in failure.dagster_event.message
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait(timeout=30)
        silent.close()


def _wait_for_step(instance, step_key: str, process: subprocess.Popen, deadline_s: float):
    import dagster as dg

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the ingest ended before it was killed"
        for run in instance.get_runs():
            started = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(e.step_key == step_key for e in started):
                assert run.status == dg.DagsterRunStatus.STARTED, run.status
                return run
        time.sleep(0.3)
    raise AssertionError(f"no run reached {step_key} in {deadline_s} s")


def test_a_process_counts_as_the_runs_worker_only_if_it_started_before_the_run():
    """After a reboot another process may hold the dead worker's pid: it is not the worker."""
    from assets.run_workers import process_alive_since

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        assert process_alive_since(child.pid, time.time())
        assert not process_alive_since(child.pid, time.time() - 3600)  # the pid, taken over later
    finally:
        child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, left unreaped: a zombie
    assert not process_alive_since(child.pid, time.time())
    child.wait()
    assert not process_alive_since(child.pid, time.time())


# --- registration beyond SQLite's stock variable limit ----------------------------------


@pytest.fixture
def stock_sqlite_variable_limit():
    """Every SQLite connection Dagster opens gets the stock build's limit of 32,766
    variables per statement (Debian's build allows 250,000, which hides the failure)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def limit(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

    event.listen(Engine, "connect", limit)
    yield
    event.remove(Engine, "connect", limit)


def many_shards(inbox: Path, count: int) -> list[str]:
    inbox.mkdir(parents=True, exist_ok=True)
    names = [f"crawl-{i:05d}.warc.gz" for i in range(count)]
    for name in names:
        (inbox / name).touch()
    return names


def test_sync_registers_more_shards_than_sqlite_has_variables(tmp_path, monkeypatch, stock_sqlite_variable_limit):
    import dagster as dg

    from asagi_cli.main import _sync

    profile = write_profile(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    names = many_shards(tmp_path / "inbox", 40_002)
    with dg.instance_for_test() as instance:
        with pytest.raises(Exception, match="too many SQL variables"):  # what one call does, as sync did
            instance.add_dynamic_partitions("warc_shards", names)
    assert sorted(_sync(load_config(profile))) == names
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_dynamic_partitions("warc_shards")) == len(names)


def test_the_sensor_registers_a_flood_of_new_shards_in_batches(tmp_path, stock_sqlite_variable_limit):
    import dagster as dg

    from asagi_dagster.definitions import build_definitions

    profile = write_profile(tmp_path, sources={"web": {"scan_files_per_tick": 50_000}})  # the whole flood in one tick
    names = many_shards(tmp_path / "inbox", 40_002)
    defs = build_definitions(str(profile))
    sensor = defs.resolve_sensor_def("warc_inbox_sensor")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            result = sensor(context)
        assert sorted(instance.get_dynamic_partitions("warc_shards")) == names
        [backfill] = result.run_requests  # one backfill, not 40,002 run requests
        assert backfill_shards(backfill.asset_graph_subset) == names


def test_the_sensor_lists_the_inbox_a_window_a_tick_and_wraps_around(tmp_path):
    """A tick lists at most scan_files_per_tick files, from where the last one stopped; a
    file added behind the window is found when the listing comes round again."""
    import dagster as dg

    from asagi_dagster.definitions import build_definitions

    profile = write_profile(tmp_path, sources={"web": {"scan_files_per_tick": 2}})
    names = many_shards(tmp_path / "inbox", 5)
    defs = build_definitions(str(profile))
    sensor = defs.resolve_sensor_def("warc_inbox_sensor")
    registered, cursors = [], []
    with dg.instance_for_test() as instance:
        cursor = None
        for tick in range(4):
            if tick == 3:
                (tmp_path / "inbox" / "crawl-00000a.warc.gz").touch()  # behind the window, after it has passed
            with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as context:
                result = sensor(context)
                cursor = result.cursor if isinstance(result, dg.SensorResult) and result.cursor is not None else context.cursor
            registered.append(sorted(instance.get_dynamic_partitions("warc_shards")))
            cursors.append(cursor)
    assert registered[0] == names[:2] and registered[1] == names[:4] and registered[2] == names
    assert cursors[:3] == [names[1], names[3], ""]  # the third window reached the end: the next starts over
    assert "crawl-00000a.warc.gz" in registered[3]


def test_resync_asks_again_for_a_shard_whose_last_ingest_step_did_not_run(profile_path, config, served_dir, image_server):
    """A run that ended before screened_pairs (failed, or canceled after pair_images)
    leaves the shard out of sync: nothing else would ever screen it."""
    import dagster as dg

    from asagi_dagster.definitions import build_definitions
    from asagi_sample.site import write_sample
    from assets.web import INGEST_ASSETS

    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    defs = build_definitions(str(profile_path))
    job = defs.resolve_job_def("web_ingest")
    with dg.instance_for_test() as instance:
        all_but_last = [dg.AssetKey(asset) for asset in INGEST_ASSETS[:-1]]
        instance.add_dynamic_partitions("warc_shards", sorted(p.name for p in Path(config.sources.web.inbox).iterdir()))
        for key in resync_tick(defs, instance, datetime(2026, 11, 1, 1, tzinfo=timezone.utc)):
            selection = all_but_last if key == SHARD else None  # SHARD's run ends before screened_pairs
            assert job.execute_in_process(instance=instance, partition_key=key, asset_selection=selection).success
        assert resync_tick(defs, instance, datetime(2026, 11, 1, 2, tzinfo=timezone.utc)) == [SHARD]
