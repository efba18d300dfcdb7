"""The data-plane contract: layout, atomic commits, re-runs that replace, and manifests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.query import accounting, connect
from asagi_dagster.report import shard_report
from asagi_dagster.storage import StageWriter, Storage, StorageSettings
from tests.conftest import BUCKET

SCHEMA = pa.schema([("record_id", pa.string()), ("value", pa.int64())])


def write(storage, partition, values, rejects=(), fail=False):
    with StageWriter(storage, "numbers", partition, SCHEMA, 1) as out:
        for v in values:
            out.count_in()
            out.write({"record_id": f"r{v}", "value": v})
        for r in rejects:
            out.count_in()
            out.reject(f"r{r}", "negative", f"{r} < 0")
        if fail:
            raise RuntimeError("killed mid-shard")
    storage.write_manifest(out.manifest)
    return out.manifest


def test_layout_and_manifest(storage):
    manifest = write(storage, "p1", [1, 2, 3], rejects=[-1])
    assert manifest.data_url == f"{storage.root_path}/numbers/p1/data.parquet"
    assert manifest.rejections_url == f"{storage.root_path}/rejections/numbers/p1/data.parquet"
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_rejected) == (4, 3, 1)
    assert manifest.rejected_by_reason == {"negative": 1}
    assert storage.read_manifest("numbers", "p1") == manifest
    assert [r["value"] for r in storage.iter_rows(manifest.data_url)] == [1, 2, 3]
    assert list(storage.iter_rows(manifest.rejections_url)) == [{"record_id": "r-1", "reason": "negative", "detail": "-1 < 0"}]


def test_unpartitioned_assets_live_under_all(storage):
    with StageWriter(storage, "whole", None, SCHEMA, 1) as out:
        out.write({"record_id": "a", "value": 1})
    assert out.manifest.partition == "all"
    assert out.manifest.data_url.endswith("/whole/all/data.parquet")


def test_a_failed_run_commits_nothing_and_keeps_the_previous_output(storage):
    first = write(storage, "p1", [1, 2])
    with pytest.raises(RuntimeError):
        write(storage, "p1", [7, 8, 9], fail=True)
    assert [r["value"] for r in storage.iter_rows(first.data_url)] == [1, 2]
    assert [p for p in storage.fs.find(storage.root_path) if ".tmp-" in p] == []


def test_row_groups_written_on_the_writer_thread_keep_their_order(storage):
    with StageWriter(storage, "numbers", "p1", SCHEMA, 1) as out:
        out.data.batch_rows = 7  # many row groups, each written while the next is built
        for v in range(100):
            out.count_in()
            out.write({"record_id": f"r{v}", "value": v})
    assert [r["value"] for r in storage.iter_rows(out.manifest.data_url)] == list(range(100))
    assert pq_row_groups(storage, out.manifest.data_url) == 15


def test_a_failed_background_write_fails_the_stage_and_commits_nothing(storage):
    first = write(storage, "p1", [1, 2])
    with pytest.raises(OSError, match="No space left"):
        with StageWriter(storage, "numbers", "p1", SCHEMA, 1) as out:
            out.data.batch_rows = 2

            def disk_full(table):  # what a full disk does to a row group write
                raise OSError(28, "No space left on device")

            out.data._writer.write_table = disk_full
            for v in range(5):
                out.write({"record_id": f"r{v}", "value": v})
    assert [r["value"] for r in storage.iter_rows(first.data_url)] == [1, 2]
    assert [p for p in storage.fs.find(storage.root_path) if ".tmp-" in p] == []


def pq_row_groups(storage, url):
    with storage.fs.open(url, "rb") as f:
        return pq.ParquetFile(f).num_row_groups


def test_rerun_replaces_data_and_rejections(storage):
    write(storage, "p1", [1, 2], rejects=[-1, -2])
    second = write(storage, "p1", [5], rejects=[])
    assert [r["value"] for r in storage.iter_rows(second.data_url)] == [5]
    assert list(storage.iter_rows(second.rejections_url)) == []
    with connect(storage) as con:
        assert accounting(con, second)["passed"]


def test_accounting_fails_when_a_row_goes_missing(storage):
    manifest = write(storage, "p1", [1, 2, 3])
    lying = manifest.model_copy(update={"rows_in": 4})  # one row read but never written
    with connect(storage) as con:
        result = accounting(con, lying)
    assert not result["passed"] and result["rows_out"] == 3


def test_report_reads_counts_and_reasons_with_duckdb(storage, config):
    write(storage, "p1", [1, 2], rejects=[-1])
    write(storage, "p2", [3], rejects=[-4, -5])
    rows = shard_report(storage, config.storage.duckdb_path)
    assert [(r["partition"], r["rows_in"], r["rows_out"], r["rejected_by_reason"]) for r in rows] == [
        ("p1", 3, 2, {"negative": 1}),
        ("p2", 3, 1, {"negative": 2}),
    ]
    import duckdb

    with duckdb.connect(config.storage.duckdb_path, read_only=True) as con:  # the views stay for ad-hoc SQL
        assert con.execute("select count(*) from rejections").fetchone()[0] == 3


# --- what a killed commit leaves ---------------------------------------------------

KILLED_WRITER = """
import sys, time
import pyarrow as pa
from asagi_dagster.storage import StorageSettings
from asagi_dagster.storage import StageWriter, Storage

storage = Storage(StorageSettings(root=sys.argv[1]))
schema = pa.schema([("record_id", pa.string()), ("value", pa.int64())])
with StageWriter(storage, "numbers", "p1", schema, 1) as out:
    out.data.batch_rows = 100
    for v in range(1000):
        out.write({"record_id": f"r{v}", "value": v})
        out.reject(f"n{v}", "negative")
    out.data.flush()
    print("mid-write", flush=True)
    time.sleep(600)
"""


def test_the_next_run_removes_what_a_killed_commit_left(storage, tmp_path):
    """A writer SIGKILLed mid-write leaves its .data.parquet.tmp-* files; the next run of
    that asset partition removes them, and only them."""
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, storage.root_path], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "mid-write"
    finally:
        writer.kill()  # SIGKILL: no finally block, no atexit runs in the writer
        writer.wait(timeout=30)
    data_dir = Path(storage.asset_dir("numbers", "p1"))
    rejections_dir = Path(storage.rejections_dir("numbers", "p1"))
    left = [p for d in (data_dir, rejections_dir) for p in d.iterdir() if re.fullmatch(r"\.data\.parquet\.tmp-[0-9a-f]{32}", p.name)]
    assert len(left) == 2 and left[0].stat().st_size > 0
    # Not ours to remove: another partition's leftovers, and names our commits never give.
    others = [
        Path(storage.temp_for(storage.path("numbers", "p2", "data.parquet"))),
        data_dir / ".data.parquet.tmp-notahexuuid",
        data_dir / "data.parquet.tmp-0123456789abcdef0123456789abcdef",
        data_dir / "notes.txt",
    ]
    for path in others:
        path.write_bytes(b"x")

    write(storage, "p1", [1, 2])

    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in others)
    assert [r["value"] for r in storage.iter_rows(storage.read_manifest("numbers", "p1").data_url)] == [1, 2]


def test_the_next_run_on_s3_removes_staged_files_and_aborts_unfinished_uploads(tmp_path, s3_endpoint):
    """On s3 a killed commit leaves its staged local file and, for a file of 100 MB and
    more, an unfinished multipart upload: the next run of the partition clears both."""
    settings = StorageSettings(root=f"s3://{BUCKET}/data", s3={"endpoint_url": s3_endpoint})
    storage = Storage(settings)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    dest = storage.path("numbers", "p1", "data.parquet")
    staged = Path(storage.temp_for(dest))  # what a commit killed before its upload leaves
    staged.write_bytes(b"half a file")
    other_staged = Path(storage.temp_for(storage.path("numbers", "p2", "data.parquet")))
    ours = client.create_multipart_upload(Bucket=BUCKET, Key="data/numbers/p1/data.parquet")["UploadId"]
    client.upload_part(Bucket=BUCKET, Key="data/numbers/p1/data.parquet", UploadId=ours, PartNumber=1, Body=b"x" * 1024)
    theirs = {
        client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        for key in ("data/numbers/p2/data.parquet", "data/numbers/p1/sub/data.parquet", "elsewhere/numbers/p1/data.parquet")
    }
    try:
        write(storage, "p1", [1, 2])
        uploads = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])}
        assert uploads == theirs
        assert not staged.exists() and other_staged.exists()
        assert [r["value"] for r in storage.iter_rows(storage.read_manifest("numbers", "p1").data_url)] == [1, 2]
    finally:
        other_staged.unlink(missing_ok=True)
