"""Per asset and shard: rows in, out and rejected by reason, from DuckDB."""

from __future__ import annotations

from asagi_dagster.query import connect, refresh_views
from asagi_dagster.storage import MANIFEST_FILE, ModelManifest, Storage


def shard_report(storage: Storage, database: str | None) -> list[dict]:
    if not storage.fs.glob(storage.path("*", "*", MANIFEST_FILE)):
        return []
    with connect(storage, database) as con:
        refresh_views(con, storage)
        rows = con.execute(
            """SELECT m.asset, m.partition, m.rows_in, m.rows_out, m.rows_rejected, m.rule_stats,
                      coalesce((SELECT map_from_entries(list((r.reason, r.n) ORDER BY r.reason))
                                FROM (SELECT reason, count(*) AS n FROM rejections r
                                      WHERE r.asset = m.asset AND r.partition = m.partition
                                      GROUP BY reason) r), MAP {}) AS by_reason
               FROM manifests m ORDER BY m.asset, m.partition"""
        ).fetchall()
    return [
        {
            "asset": asset,
            "partition": partition,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rows_rejected": rejected,
            "rejected_by_reason": dict(by_reason),
            "rule_stats": rule_stats,
        }
        for asset, partition, rows_in, rows_out, rejected, rule_stats, by_reason in rows
    ]


def model_report(storage: Storage) -> list[dict]:
    """The trained models under the root: stage, steps, examples, final loss, folder."""
    found = []
    for path in sorted(storage.fs.glob(storage.path("*", "*", MANIFEST_FILE))):
        raw = storage.read_json(path)
        if "model_url" in raw:
            found.append(ModelManifest.model_validate(raw).model_dump(include={"asset", "stage", "steps", "examples", "final_loss", "resumed_from", "model_url"}))
    return found


def format_table(rows: list[dict], models: list[dict] = ()) -> str:
    if not rows:
        return "no materialized assets yet"
    header = f"{'asset':<24} {'partition':<28} {'in':>7} {'out':>7} {'rejected':>8}  reasons"
    lines = [header, "-" * len(header)]
    for r in rows:
        reasons = ", ".join(f"{k}={v}" for k, v in r["rejected_by_reason"].items())
        lines.append(f"{r['asset']:<24} {r['partition']:<28} {r['rows_in']:>7} {r['rows_out']:>7} {r['rows_rejected']:>8}  {reasons}")
    ruled = [r for r in rows if r["rule_stats"]]
    if ruled:
        lines += ["", "rule pass rates (of the rows that reached each rule)"]
        for r in ruled:
            rates = ", ".join(f"{s['rule']}={s['passed']}/{s['checked']}" for s in r["rule_stats"])
            lines.append(f"{r['asset']:<24} {r['partition']:<28} {rates}")
    if models:
        lines += ["", "trained models"]
        for m in models:
            loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.4f}"
            lines.append(f"{m['asset']:<24} {m['steps']:>5} steps on {m['examples']} examples, final loss {loss}: {m['model_url']}")
    return "\n".join(lines)
