"""The manifest catalog: nothing lost under concurrent writers and compactions (local root
and moto S3, real processes), a kill between manifest and entry found by the check and
fixed by a rebuild, readers that agree with the manifest files, and global steps that
read the catalog, not a file per shard (requests counted by the S3 server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from asagi_dagster import catalog
from asagi_dagster.report import format_summary, shard_report, summary_report
from asagi_dagster.storage import Manifest, ModelManifest, S3Settings, StageWriter, Storage, StorageSettings
from benchmarks.bench_catalog import MIXTURE_WEIGHTS, CountingMotoServer, all_manifests, shard_key, write_manifest_files
from tests.conftest import BUCKET, PROJECT, subprocess_env, write_profile

SCHEMA = pa.schema([("record_id", pa.string())])


def commit(storage: Storage, asset: str, partition: str, kept: int, rejected: dict[str, int] = {}, source: dict = {}) -> None:
    """A real stage commit: data and rejection files, then the manifest (and its entry)."""
    with StageWriter(storage, asset, partition, SCHEMA, 1) as out:
        for n in range(kept):
            out.count_in()
            out.write({"record_id": f"k{n}"})
        for reason, count in rejected.items():
            for n in range(count):
                out.count_in()
                out.reject(f"{reason}{n}", reason)
        out.source = dict(source)
    storage.write_manifest(out.manifest)


def manifest_files(storage: Storage) -> dict[tuple[str, str], dict]:
    """What the manifest files say, read one by one (the source of truth)."""
    found = {}
    for path in storage.fs.glob(storage.path("*", "*", "_manifest.json")):
        asset, partition = path.split("/")[-3:-1]
        found[(asset, partition)] = storage.read_json(path)
    return found


def cataloged(storage: Storage) -> dict[tuple[str, str], dict]:
    return {key: m.model_dump() for key, m in catalog.latest_manifests(storage).items()}


def built(storage: Storage) -> Storage:
    """``storage`` with its (empty) catalog built, as a root is after its first read: later
    reads then show what the catalog holds, not a rebuild from the manifest files."""
    catalog.ensure_built(storage)
    assert storage.exists(catalog.built_marker(storage))
    return storage


@pytest.fixture
def storage(config) -> Storage:
    return built(Storage(config.storage))


@pytest.fixture(params=["local", "s3"])
def any_storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return built(Storage(StorageSettings(root=str(tmp_path / "data"))))
    endpoint = request.getfixturevalue("s3_endpoint")
    # moto keeps its buckets per process, across servers: a prefix of this test's own
    return built(Storage(StorageSettings(root=f"s3://{BUCKET}/{tmp_path.name}/data", s3=S3Settings(endpoint_url=endpoint))))


def _settings_json(storage: Storage, tmp_path: Path) -> str:
    root = storage.root_path if storage.is_local else storage.url(storage.root_path)
    return json.dumps({"root": root, "s3": {"endpoint_url": storage.options.get("endpoint_url")}})


# Writes ``count`` versions of its own partitions and of one shared partition, then exits.
WRITER = """
import json, sys
from asagi_dagster import catalog
from asagi_dagster.storage import StorageSettings
from asagi_dagster.storage import Manifest, Storage
catalog.COMPACT_AT = int(sys.argv[4])  # small: writers fold the log while others append
storage = Storage(StorageSettings.model_validate(json.loads(sys.argv[1])))
name, count = sys.argv[2], int(sys.argv[3])
for n in range(count):
    for partition in (f"{name}-{n % 5}", "shared"):
        storage.write_manifest(Manifest(asset="numbers", partition=partition, schema_version=1, data_url="d", rejections_url="r",
                                        rows_in=n, rows_out=n, rows_rejected=0, rejected_by_reason={}, source={"writer": name}))
"""

# Compacts until the file named by argv[2] exists (the writers are done), at least twice.
COMPACTOR = """
import json, os, sys
from asagi_dagster import catalog
from asagi_dagster.storage import StorageSettings
from asagi_dagster.storage import Storage
storage = Storage(StorageSettings.model_validate(json.loads(sys.argv[1])))
rounds = 0
while rounds < 2 or not os.path.exists(sys.argv[2]):
    catalog.compact(storage, merge_at=2)
    rounds += 1
"""


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=PROJECT, env=subprocess_env(), stderr=subprocess.PIPE, text=True)


def _wait(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]


def _assert_everything_there(storage: Storage, writers: list[str], count: int) -> None:
    entries = cataloged(storage)
    for name in writers:
        for p in range(5):
            last = max(n for n in range(count) if n % 5 == p)  # each partition's last version
            assert entries[("numbers", f"{name}-{p}")]["rows_in"] == last
    assert entries[("numbers", "shared")] == manifest_files(storage)[("numbers", "shared")]
    assert catalog.check(storage).ok


def test_appends_from_several_processes_at_once_lose_nothing(any_storage, tmp_path):
    settings = _settings_json(any_storage, tmp_path)
    writers = [f"w{n}" for n in range(4)]
    count = 12
    # A log of 7 entries: the writers also fold it, into each other's appends.
    _wait([_python(WRITER, settings, name, str(count), "7") for name in writers])
    _assert_everything_there(any_storage, writers, count)
    assert catalog._list(any_storage, catalog.compacted_dir(any_storage))  # compactions did run


def test_compactions_concurrent_with_appends_and_each_other_lose_nothing(any_storage, tmp_path):
    settings = _settings_json(any_storage, tmp_path)
    done = tmp_path / "writers-done"
    compactors = [_python(COMPACTOR, settings, str(done)) for _ in range(2)]
    writers = [f"w{n}" for n in range(3)]
    try:
        _wait([_python(WRITER, settings, name, "10", "0") for name in writers])  # writers never compact: the compactors do
    finally:
        done.touch()
    _wait(compactors)
    _assert_everything_there(any_storage, writers, 10)


def test_two_compactions_of_the_same_files_keep_every_entry(storage, monkeypatch):
    """One compaction removes its inputs while another has read them and is about to
    commit: the second commits a copy, and what it removes is gone already."""
    for n in range(6):
        commit(storage, "numbers", f"p{n}", kept=n)
    remove = catalog._remove
    nested = []

    def other_compaction_first(st, paths):
        monkeypatch.setattr(catalog, "_remove", remove)
        nested.append(catalog.compact(st))  # folds and removes the very same files
        remove(st, paths)

    monkeypatch.setattr(catalog, "_remove", other_compaction_first)
    outer = catalog.compact(storage)
    assert nested[0].log_entries == outer.log_entries == 6 and not outer.yielded
    assert len(catalog._list(storage, catalog.compacted_dir(storage))) == 2  # both outputs: duplicates, no gaps
    assert cataloged(storage) == manifest_files(storage)
    merged = catalog.compact(storage, merge_all=True)
    assert merged.entries == 6 and cataloged(storage) == manifest_files(storage)


def test_a_compaction_whose_input_vanishes_yields_and_removes_nothing(storage, monkeypatch):
    for n in range(4):
        commit(storage, "numbers", f"p{n}", kept=n)
    read_log = catalog._read_log

    def folded_meanwhile(st, paths):
        monkeypatch.setattr(catalog, "_read_log", read_log)
        catalog.compact(st)  # another compaction takes the files first
        return read_log(st, paths)

    monkeypatch.setattr(catalog, "_read_log", folded_meanwhile)
    assert catalog.compact(storage).yielded
    assert cataloged(storage) == manifest_files(storage)


def test_a_reader_whose_files_are_folded_under_it_reads_again(storage, monkeypatch):
    for n in range(4):
        commit(storage, "numbers", f"p{n}", kept=n)
    read_log = catalog._read_log
    calls = []

    def folded_meanwhile(st, paths):
        calls.append(len(paths))
        if len(calls) == 1:
            monkeypatch.setattr(catalog, "_read_log", read_log)
            catalog.compact(st)  # folds the files this reader has just listed
            monkeypatch.setattr(catalog, "_read_log", folded_meanwhile)
        return read_log(st, paths)

    monkeypatch.setattr(catalog, "_read_log", folded_meanwhile)
    assert cataloged(storage) == manifest_files(storage)
    assert calls == [4, 0]  # the second round found the entries compacted


def test_the_writer_that_finds_a_long_log_folds_it(storage):
    for n in range(12):
        catalog.append(storage, [numbers(f"p{n}", n)], compact_at=5)
    assert len(catalog._list(storage, catalog.log_dir(storage))) < 5
    assert len(catalog._list(storage, catalog.compacted_dir(storage))) == 2
    assert sorted(m["rows_in"] for m in cataloged(storage).values()) == list(range(12))


def numbers(partition: str, rows: int) -> Manifest:
    return Manifest(
        asset="numbers",
        partition=partition,
        schema_version=1,
        data_url="d",
        rejections_url="r",
        rows_in=rows,
        rows_out=rows,
        rows_rejected=0,
        rejected_by_reason={},
    )


# --- a kill between the manifest and its catalog entry -----------------------------------

KILLED_BETWEEN = """
import json, os, signal, sys
from asagi_dagster import catalog
from asagi_dagster.storage import StorageSettings
from asagi_dagster.storage import Manifest, Storage
storage = Storage(StorageSettings.model_validate(json.loads(sys.argv[1])))
catalog.append = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # dies right after the manifest's commit
rows = int(sys.argv[3])
storage.write_manifest(Manifest(asset="numbers", partition=sys.argv[2], schema_version=1, data_url="d", rejections_url="r",
                                rows_in=rows, rows_out=rows, rows_rejected=0, rejected_by_reason={}))
"""


def test_a_kill_between_manifest_and_entry_is_found_by_the_check_and_fixed_by_rebuild(any_storage, tmp_path):
    for n in range(3):
        commit(any_storage, "numbers", f"p{n}", kept=n)
    before = versions(any_storage)
    settings = _settings_json(any_storage, tmp_path)
    for partition, rows in (("p1", "99"), ("p9", "5")):  # a re-run of p1, a first run of p9
        killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN, settings, partition, rows], cwd=PROJECT, env=subprocess_env(), capture_output=True)
        assert killed.returncode == -9, killed.stderr[-2000:]
    assert any_storage.read_manifest("numbers", "p1").rows_in == 99  # committed, not cataloged
    found = catalog.check(any_storage)
    assert (found.stale, found.missing, found.orphaned, found.manifests) == (["numbers/p1"], ["numbers/p9"], [], 4)
    any_storage.fs.rm(any_storage.manifest_path("numbers", "p2"))  # a partition removed by hand
    assert catalog.check(any_storage).orphaned == ["numbers/p2"]
    assert catalog.rebuild(any_storage) == 3
    assert catalog.check(any_storage).ok
    after = versions(any_storage)  # a partition's version moves only where its manifest did
    assert after[("numbers", "p0")] == before[("numbers", "p0")] and after[("numbers", "p1")] > before[("numbers", "p1")]
    assert cataloged(any_storage) == manifest_files(any_storage)
    commit(any_storage, "numbers", "p1", kept=7)  # commits after a rebuild supersede it
    assert cataloged(any_storage)[("numbers", "p1")]["rows_in"] == 7


def versions(storage: Storage) -> dict[tuple[str, str], int]:
    table = catalog.read_latest(storage, ["committed_ns"])
    return {(a, p): ns for a, p, ns in zip(*(table.column(c).to_pylist() for c in ("asset", "partition", "committed_ns")))}


def test_asagi_catalog_check_fails_on_a_difference_and_rebuild_mends_it(tmp_path):
    profile = write_profile(tmp_path)
    env = {**subprocess_env(), "ASAGI_CONFIG": str(profile)}
    storage = built(Storage(StorageSettings(root=str(tmp_path / "data"))))
    commit(storage, "numbers", "p1", kept=2)
    storage.write_json(
        storage.manifest_path("numbers", "p2"), json.loads(json.dumps(storage.read_manifest("numbers", "p1").model_dump())) | {"partition": "p2"}
    )

    def asagi(*args):
        return subprocess.run([sys.executable, "-m", "asagi_cli", "catalog", *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120)

    found = asagi("check")
    assert found.returncode == 1 and "not in the catalog: numbers/p2" in found.stdout and "asagi catalog rebuild" in found.stderr
    assert "read 2 manifest files" in found.stdout
    assert asagi("rebuild").stdout.strip() == "rebuilt the catalog: 2 entries"
    assert asagi("check").returncode == 0
    assert "nothing to compact" in asagi("compact").stdout


def test_a_root_from_before_the_catalog_is_cataloged_on_its_first_read(tmp_path):
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    for n in range(3):  # manifest files only, as an older version wrote them
        storage.write_json(storage.manifest_path("numbers", f"old{n}"), numbers(f"old{n}", n).model_dump())
    older = numbers("old2", 2).model_dump()
    del older["rule_stats"]  # written before the field existed: its default stands in
    storage.write_json(storage.manifest_path("numbers", "old2"), older)
    storage.write_manifest(numbers("new", 7))  # the first commit after the upgrade: one log entry
    assert sorted(cataloged(storage)) == [("numbers", "new"), ("numbers", "old0"), ("numbers", "old1"), ("numbers", "old2")]
    assert catalog.check(storage).ok and catalog._list(storage, catalog.log_dir(storage)) == []


# --- readers ----------------------------------------------------------------------------------


def _commit_a_crawl(storage: Storage) -> None:
    commit(storage, "web_documents", "s1", 3, {"http_status": 2}, {"fingerprint": "old"})
    commit(storage, "web_documents", "s1", 4, {"http_status": 1, "non_html": 2}, {"fingerprint": "new"})  # a re-run replaces
    commit(storage, "web_documents", "s2", 5, {"non_html": 1}, {"fingerprint": "f2"})
    commit(storage, "pair_images", "s1", 2, {"robots_disallowed": 1})
    with StageWriter(storage, "screened_pairs", "s1", SCHEMA, 1) as out:
        out.count_in(3)
        out.write({"record_id": "a"})
        out.reject("b", "text_length")
        out.reject("c", "monochrome")
        out.rule_stats = [{"rule": "text_length", "checked": 3, "rejected": 1, "passed": 2}, {"rule": "monochrome", "checked": 2, "rejected": 1, "passed": 1}]
    storage.write_manifest(out.manifest)
    storage.write_manifest(ModelManifest(asset="vlm_stage1", model_url="m", stage="stage1", steps=1000, examples=9, mixture_url="x"))


def test_report_summary_and_shards_equal_what_the_manifests_say(any_storage):
    _commit_a_crawl(any_storage)
    files = {k: v for k, v in manifest_files(any_storage).items() if "rows_in" in v}
    rows = shard_report(any_storage, None)
    assert [(r["asset"], r["partition"]) for r in rows] == sorted(files)
    for row in rows:
        truth = files[(row["asset"], row["partition"])]
        assert row == {k: truth[k] for k in ("asset", "partition", "rows_in", "rows_out", "rows_rejected", "rejected_by_reason", "rule_stats")}
    summary = summary_report(any_storage, None)
    for line in summary["assets"]:
        mine = [m for (asset, _), m in files.items() if asset == line["asset"]]
        assert line == {"asset": line["asset"], "partitions": len(mine), **{k: sum(m[k] for m in mine) for k in ("rows_in", "rows_out", "rows_rejected")}}
    assert [a["asset"] for a in summary["assets"]] == ["pair_images", "screened_pairs", "web_documents"]
    reasons = {(r["asset"], r["reason"]): r["rows"] for r in summary["rejected_by_reason"]}
    assert reasons == {
        ("pair_images", "robots_disallowed"): 1,
        ("screened_pairs", "monochrome"): 1,
        ("screened_pairs", "text_length"): 1,
        ("web_documents", "http_status"): 1,
        ("web_documents", "non_html"): 3,
    }
    assert [(r["rule"], r["passed"], r["checked"]) for r in summary["rule_pass_rates"]] == [("text_length", 2, 3), ("monochrome", 1, 2)]
    assert [(m["asset"], m["steps"]) for m in summary["models"]] == [("vlm_stage1", 1000)]
    text = format_summary(summary)
    assert "monochrome=1/2" in text and "web_documents" in text and "vlm_stage1" in text


def test_asagi_report_prints_the_summary_and_the_shards_on_request(tmp_path):
    profile = write_profile(tmp_path)
    env = {**subprocess_env(), "ASAGI_CONFIG": str(profile)}
    storage = built(Storage(StorageSettings(root=str(tmp_path / "data"))))
    _commit_a_crawl(storage)

    def report(*args):
        return subprocess.run(
            [sys.executable, "-m", "asagi_cli", "report", *args], env=env, cwd=PROJECT, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    assert json.loads(report("--json")) == summary_report(storage, None)
    assert json.loads(report("--shards", "--json")) == shard_report(storage, None)
    assert "asagi report --shards" in report() and "s2" not in report()
    assert "web_documents            s2" in report("--shards")
    import duckdb

    with duckdb.connect(str(tmp_path / "asagi.duckdb"), read_only=True) as con:  # kept for ad-hoc SQL
        assert con.execute("SELECT sum(rows_rejected) FROM manifests WHERE asset = 'web_documents'").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM rejections WHERE asset = 'web_documents'").fetchone()[0] == 4


def test_resync_plan_from_the_catalog(tmp_path):
    from asagi_dagster.web.inbox import Inbox, plan_sync

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("done.warc", "changed.warc", "unfinished.warc", "never.warc", "new.warc"):
        (inbox / name).write_bytes(b"WARC/1.0\r\n")
    box = Inbox(str(inbox), S3Settings())
    storage = built(Storage(StorageSettings(root=str(tmp_path / "data"))))
    for key in ("done.warc", "changed.warc", "unfinished.warc"):
        commit(storage, "web_documents", key, 1, source={"fingerprint": box.fingerprint(key)})
    for key in ("done.warc", "changed.warc"):
        commit(storage, "pair_images", key, 1)
    os.utime(inbox / "changed.warc", (1, 1))
    registered = {"done.warc", "changed.warc", "unfinished.warc", "never.warc"}
    plan = plan_sync(box, registered.intersection, storage, "web_documents", "pair_images")
    assert [s.key for s in plan.new] == ["new.warc"]
    assert sorted(s.key for s in plan.changed) == ["changed.warc", "never.warc", "unfinished.warc"]


# --- storage requests of the global steps ------------------------------------------------------

SHARDS = 50


@pytest.fixture
def counted_s3(monkeypatch):
    server = CountingMotoServer()
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=server.endpoint()).create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def test_global_steps_make_at_most_two_requests_per_shard_on_s3(counted_s3, tmp_path):
    from asagi_dagster.filters import dedup
    from asagi_dagster.train import mixture
    from asagi_dagster.web.inbox import ShardFile, _ingested, _out_of_sync

    storage = Storage(StorageSettings(root=f"s3://{BUCKET}/{tmp_path.name}/data", s3=S3Settings(endpoint_url=counted_s3.endpoint())))

    def crawl(shards: int) -> None:
        """``shards`` shards' manifest files, cataloged by a rebuild, then ten commits
        through the write path, left in the log."""
        write_manifest_files(storage, shards)
        catalog.rebuild(storage)
        for manifest in list(all_manifests(storage, 10))[:10]:
            storage.write_manifest(manifest)

    crawl(SHARDS)
    keys = [shard_key(i) for i in range(SHARDS)]
    files = [ShardFile(key, "unused", "unused") for key in keys]

    def resync():
        ingested = _ingested(storage, "web_documents", "pair_images")
        return [f for f in files if _out_of_sync(ingested, f)]

    steps = {
        "report": lambda: summary_report(storage, None),
        "shard report": lambda: shard_report(storage, None),
        "re-sync plan": resync,
        "hash index manifest read": lambda: dedup.screened_manifests(storage),
        "mixture input read": lambda: mixture.mixture_inputs(storage, keys, {}, [], MIXTURE_WEIGHTS),
    }
    counts = {name: counted_s3.count(step)[0] for name, step in steps.items()}
    assert all(n <= 2 * SHARDS for n in counts.values()), counts
    # The counter sees a reader that goes back to files per shard, as the re-sync did.
    per_shard, _ = counted_s3.count(
        lambda: [storage.exists(storage.manifest_path("pair_images", k)) and storage.read_manifest("web_documents", k) for k in keys]
    )
    assert per_shard > 2 * SHARDS
    # Requests do not grow with the shards: twice the shards, the catalog in the same shape,
    # about the same requests (DuckDB's probes of a file vary by a few), not 50 x more.
    crawl(2 * SHARDS)
    again = {name: counted_s3.count(step)[0] for name, step in steps.items()}
    assert all(again[name] <= counts[name] + 10 for name in counts), (counts, again)
