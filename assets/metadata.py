"""What the UI shows for a partition: counts, rejection reasons, samples, the accounting check."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from asagi_dagster.previews import sample_rows, thumbnails
from asagi_dagster.query import accounting
from asagi_dagster.storage import Manifest, Storage
from resources.storage import DuckDBResource, StorageResource


def manifest_metadata(storage: Storage, manifest: Manifest) -> dict:
    metadata = {
        "rows_in": manifest.rows_in,
        "rows_out": manifest.rows_out,
        "rows_rejected": manifest.rows_rejected,
        "rejected_by_reason": dg.MetadataValue.json(manifest.rejected_by_reason),
        "data": dg.MetadataValue.path(manifest.data_url),
        "rejections": dg.MetadataValue.path(manifest.rejections_url),
        "schema_version": manifest.schema_version,
    }
    rows = sample_rows(storage, manifest.data_url) if manifest.rows_out else []
    if rows:
        metadata["sample_rows"] = dg.MetadataValue.md(_markdown_table(rows))
    rejected = sample_rows(storage, manifest.rejections_url, max_chars=300) if manifest.rows_rejected else []
    if rejected:  # what was turned away and why (for a corpus: what the model wrote)
        metadata["sample_rejections"] = dg.MetadataValue.md(_markdown_table(rejected))
    if rows and "bytes" in storage.columns(manifest.data_url):
        images = thumbnails(storage, manifest.data_url)
        if images:
            metadata["preview"] = dg.MetadataValue.md(" ".join(f"![image {i}]({uri})" for i, uri in enumerate(images)))
    return metadata


def output(storage: StorageResource, manifest: Manifest, **extra) -> dg.Output:
    """A committed manifest as the asset's output, with what the UI shows of it (``extra``: the asset's own metadata)."""
    return dg.Output(manifest, metadata={**manifest_metadata(storage.storage, manifest), **rule_stats_metadata(manifest), **extra})


def stage_results(storage: StorageResource, duckdb: DuckDBResource, manifest: Manifest, **extra) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """How a stage asset ends once its writer committed: its output, then its accounting check."""
    yield output(storage, manifest, **extra)
    yield accounting_check(duckdb, manifest)


def accounted(asset: str) -> dg.AssetCheckSpec:
    """The accounting check every asset has (its result: ``accounting_check``)."""
    return dg.AssetCheckSpec("rows_accounted", asset=asset, description="rows in = rows out + rows rejected, recounted from the files")


def rule_stats_metadata(manifest: Manifest) -> dict:
    """Each rule's pass rate among the rows that reached it, as a table and as JSON."""
    if not manifest.rule_stats:
        return {}
    lines = ["| rule | checked | rejected | pass rate |", "|---|---|---|---|"]
    for row in manifest.rule_stats:
        rate = int(row["passed"]) / int(row["checked"]) if row["checked"] else 1.0
        lines.append(f"| {row['rule']} | {row['checked']} | {row['rejected']} | {rate:.1%} |")
    return {"rule_pass_rates": dg.MetadataValue.md("\n".join(lines)), "rule_stats": dg.MetadataValue.json(manifest.rule_stats)}


def accounting_check(duckdb: DuckDBResource, manifest: Manifest) -> dg.AssetCheckResult:
    with duckdb.connect() as con:
        result = accounting(con, manifest)
    return dg.AssetCheckResult(
        asset_key=manifest.asset,
        check_name="rows_accounted",
        passed=result["passed"],
        metadata={
            "rows_in": result["rows_in"],
            "rows_out": result["rows_out"],
            "rows_rejected": result["rows_rejected"],
            "rejected_by_reason": dg.MetadataValue.json(result["rejected_by_reason"]),
        },
    )


def _markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    escape = lambda v: "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
