"""The data-plane contract: layout, atomic commits, re-runs that replace, and manifests."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.query import accounting, connect
from asagi_dagster.report import shard_report
from asagi_dagster.storage import StageWriter

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
