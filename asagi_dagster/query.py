"""DuckDB over the storage root's Parquet files: counts for checks, stats for reports.

Remote roots are reached through the same fsspec filesystem the pipeline writes with
(registered with DuckDB), so no DuckDB extension needs downloading.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from asagi_dagster.storage import DATA_FILE, Manifest, Storage


def connect(storage: Storage, database: str | None = None) -> duckdb.DuckDBPyConnection:
    """In memory by default; a database file only where views should persist (reports)."""
    if database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(database or ":memory:")
    if not storage.is_local:
        con.register_filesystem(storage.fs)
    return con


def one_row(result: duckdb.DuckDBPyConnection) -> tuple:
    """The row of a query that always has one (an aggregate: count, max, sum)."""
    row = result.fetchone()
    assert row is not None, "an aggregate query returned no row"
    return row


def count_rows(con: duckdb.DuckDBPyConnection, url: str) -> int:
    return one_row(con.execute("SELECT count(*) FROM read_parquet(?)", [url]))[0]


def count_reasons(con: duckdb.DuckDBPyConnection, url: str) -> dict[str, int]:
    rows = con.execute("SELECT reason, count(*) FROM read_parquet(?) GROUP BY reason ORDER BY reason", [url]).fetchall()
    return dict(rows)


def accounting(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> dict:
    """Recount what a partition's files hold and compare with what went in.

    Reads the committed Parquet files, not the writer's counters, so a lost or
    duplicated row shows up.
    """
    rows_out = count_rows(con, manifest.data_url)
    by_reason = count_reasons(con, manifest.rejections_url)
    rejected = sum(by_reason.values())
    return {
        "passed": manifest.rows_in == rows_out + rejected,
        "rows_in": manifest.rows_in,
        "rows_out": rows_out,
        "rows_rejected": rejected,
        "rejected_by_reason": by_reason,
    }


# Rejections of web_documents that stand for bytes of the file, not for a record.
SPAN_REASONS = ("corrupt_warc", "empty_warc_file", "missing_warc_file")


def record_starts_check(con: duckdb.DuckDBPyConnection, documents: Manifest, images: Manifest) -> dict:
    """The records a shard's files hold (rows and rejections of web_documents and
    web_images, damaged spans aside) against the record starts a scan of the raw WARC saw
    outside those spans. The scan parses no record, so a reader that stops early or skips
    records fails this even when every row it did read is accounted for."""
    source = documents.source
    starts = int(source["record_starts"])
    in_spans = int(source["record_starts_in_rejected_spans"])
    # What the reader explains (shown, so an unusual file is visible): starts inside a
    # record whose own Content-Length holds them, and records sharing a gzip member.
    inside = int(source.get("record_starts_inside_records", 0))
    shared = int(source.get("records_sharing_a_start", 0))
    records = 0
    for manifest in (documents, images):
        records += count_rows(con, manifest.data_url)
        records += sum(n for reason, n in count_reasons(con, manifest.rejections_url).items() if reason not in SPAN_REASONS)
    return {
        "passed": records == starts - in_spans - inside + shared,
        "warc_layout": source["warc_layout"],
        "record_starts": starts,
        "record_starts_in_rejected_spans": in_spans,
        "record_starts_inside_records": inside,
        "records_sharing_a_start": shared,
        "records_in_files": records,
    }


def benchmark_overlaps(con: duckdb.DuckDBPyConnection, pairs_url: str, benchmark_url: str, max_hamming: int) -> list[dict]:
    """Pairs in ``pairs_url`` that match a benchmark image (perceptual hash within
    ``max_hamming`` bits, or the same Visual Genome id): the decontamination audit, made
    independently of the filter that should have removed them."""
    rows = con.execute(
        """SELECT p.pair_id, b.record_id AS benchmark_record,
                  bit_count(xor(p.image_phash, b.image_phash)) AS distance
           FROM read_parquet(?) p JOIN read_parquet(?) b
             ON bit_count(xor(p.image_phash, b.image_phash)) <= ? OR p.vg_image_id = b.vg_image_id
           ORDER BY p.pair_id, b.record_id""",
        [pairs_url, benchmark_url, max_hamming],
    ).fetchall()
    return [{"pair_id": pair, "benchmark_record": record, "distance": distance} for pair, record, distance in rows]


def refresh_views(con: duckdb.DuckDBPyConnection, storage: Storage) -> None:
    """Tables kept in the report's database for ad-hoc SQL: ``manifests``, a snapshot of
    the manifest catalog's row accounts (the temporary table ``catalog`` when loaded, else
    read now), and ``rejections``, a view over every rejection file (read when queried)."""
    from asagi_dagster import catalog  # catalog reaches DuckDB through this module

    loaded = one_row(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'catalog' AND temporary"))[0]
    if not loaded:
        catalog.load_latest(storage, con, "catalog", ["kind", "rows_in", "rows_out", "rows_rejected", "rejected_by_reason", "rule_stats"])
    con.execute(
        """CREATE OR REPLACE TABLE manifests AS
           SELECT asset, partition, rows_in, rows_out, rows_rejected, rejected_by_reason, coalesce(rule_stats, []) AS rule_stats
           FROM catalog WHERE kind = 'rows'"""
    )
    rejections = f"{storage.url(storage.root_path)}/rejections/*/*/{DATA_FILE}"
    try:
        con.execute(
            f"""CREATE OR REPLACE VIEW rejections AS
                SELECT split_part(filename, '/', -3) AS asset, split_part(filename, '/', -2) AS partition,
                       record_id, reason, detail
                FROM read_parquet('{rejections}', filename=true)"""
        )
    except duckdb.IOException:  # no rejection file yet: nothing to view
        con.execute("DROP VIEW IF EXISTS rejections")
