"""One partition of screened pairs -> filtered pairs: benchmark images out, then
duplicates out against the global hash index, then repeated (image, text) pairs,
then (decoding only the survivors) images too similar to document images.

Each step is counted like a rule (pairs that reached it, pairs it removed), so the
UI and ``asagi report`` show what each one cost.
"""

from __future__ import annotations

import duckdb
from PIL import Image

from asagi_dagster.core import Rejected
from asagi_dagster.filters.dedup import ORIGIN_KEY_SQL
from asagi_dagster.filters.documents import DocumentCheck
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.rules import RuleStats
from asagi_dagster.storage import StageWriter, Storage

STEPS = ("benchmark_overlap", "duplicate_image", "near_duplicate_image", "duplicate_pair", "document_image")


class StaleIndexError(RuntimeError):
    """The hash index was built before this partition was screened."""


def filter_partition(
    con: duckdb.DuckDBPyConnection,
    screened_url: str,
    index_url: str,
    benchmark_url: str,
    out: StageWriter,
    max_benchmark_hamming: int,
    documents: DocumentCheck | None = None,
    storage: Storage | None = None,
    images_url: str | None = None,
) -> None:
    """Rows in: the partition's screened pairs. Sets ``out.rule_stats``.

    With ``documents``, the image bytes come from ``images_url`` (rows with pair_id and
    bytes, read through ``storage``)."""
    result = con.execute(
        f"""WITH s AS (SELECT *, {ORIGIN_KEY_SQL} AS origin FROM read_parquet(?)),
                 bench AS (SELECT * FROM read_parquet(?)),
                 near_bench AS (
                     SELECT s.pair_id, arg_min(b.record_id, bit_count(xor(s.image_phash, b.image_phash))) AS hit,
                            min(bit_count(xor(s.image_phash, b.image_phash))) AS distance
                     FROM s JOIN bench b ON b.image_phash IS NOT NULL
                          AND bit_count(xor(s.image_phash, b.image_phash)) <= {int(max_benchmark_hamming)}
                     GROUP BY s.pair_id),
                 vg_bench AS (
                     SELECT s.pair_id, min(b.record_id) AS vg_hit
                     FROM s JOIN bench b ON s.vg_image_id = b.vg_image_id GROUP BY s.pair_id)
            SELECT s.* EXCLUDE (origin), s.origin, i.first_origin, i.keeper_sha256, i.hamming_to_keeper,
                   nb.hit, nb.distance, vb.vg_hit,
                   row_number() OVER (PARTITION BY s.origin, s.image_sha256, s.caption ORDER BY s.pair_id) AS copy_no
            FROM s LEFT JOIN read_parquet(?) i USING (image_sha256)
                   LEFT JOIN near_bench nb USING (pair_id) LEFT JOIN vg_bench vb USING (pair_id)
            ORDER BY s.pair_id""",
        [screened_url, benchmark_url, index_url],
    )
    columns = out.schema.names
    names = [d[0] for d in result.description]
    stats = RuleStats(STEPS)
    survivors: dict[str, dict] = {}
    while batch := result.fetchmany(1024):
        for values in batch:
            row = dict(zip(names, values))
            out.count_in()
            problem = _first_problem(row, stats)
            if problem:
                out.reject(row["pair_id"], *problem)
            elif documents is None:
                out.write({name: row[name] for name in columns})
            else:
                survivors[row["pair_id"]] = {name: row[name] for name in columns}
    if documents is not None:
        assert storage is not None and images_url is not None, "documents are read from images_url through storage"
        _drop_documents(survivors, documents, storage, images_url, out, stats)
    out.rule_stats = stats.as_rows()


def _drop_documents(survivors: dict[str, dict], documents: DocumentCheck, storage: Storage, images_url: str, out: StageWriter, stats: RuleStats) -> None:
    """Stream the partition's images once, embedding the survivors' in batches."""
    pending: list[tuple[dict, Image.Image]] = []

    def flush() -> None:
        for (row, _), problem in zip(pending, documents.problems([image for _, image in pending])):
            stats.checked["document_image"] += 1
            if problem:
                stats.rejected["document_image"] += 1
                out.reject(row["pair_id"], "document_image", problem)
            else:
                out.write(row)
        pending.clear()

    for batch in storage.iter_batches(storage.strip_protocol(images_url), ["pair_id", "bytes"], batch_rows=64):
        for image in batch.to_pylist():
            row = survivors.pop(image["pair_id"], None)
            if row is None:
                continue
            try:
                pending.append((row, small_image(image["bytes"], documents.encoder.input_side, documents.safety)))
            except Rejected as rejected:  # decoded once already at screening; a changed file is still no crash
                out.reject(row["pair_id"], rejected.reason, rejected.detail)
            if len(pending) >= documents.batch_size:
                flush()
    flush()
    for pair_id in survivors:  # screened from an image the images file no longer has
        out.reject(pair_id, "image_missing", "not in the partition's image file")


def _first_problem(row: dict, stats: RuleStats) -> tuple[str, str] | None:
    if row["keeper_sha256"] is None:
        raise StaleIndexError(f"image_hash_index has no entry for {row['pair_id']}'s image: materialize image_hash_index after screening this partition")
    for step, problem in _findings(row):
        stats.checked[step] += 1
        if problem:
            stats.rejected[step] += 1
            return step, problem
    return None


def _findings(row: dict):
    """Each step's finding for the row, in order; None where the step finds nothing."""
    if row["hit"] is not None:
        yield "benchmark_overlap", f"{row['distance']} bits from {row['hit']}"
    elif row["vg_hit"] is not None:
        yield "benchmark_overlap", f"Visual Genome image {row['vg_image_id']} is {row['vg_hit']}"
    else:
        yield "benchmark_overlap", None
    same_bytes_elsewhere = row["origin"] != row["first_origin"]
    yield "duplicate_image", f"the same bytes are kept from {row['first_origin']}" if same_bytes_elsewhere else None
    near = row["keeper_sha256"] != row["image_sha256"]
    yield "near_duplicate_image", f"{row['hamming_to_keeper']} bits from image {row['keeper_sha256'][:16]}, kept instead" if near else None
    yield "duplicate_pair", "the same image and text earlier in this origin" if row["copy_no"] > 1 else None
