"""What the storage root holds, from one read of the manifest catalog (asagi_dagster/catalog.py).

The default is a summary, by asset and by rejection reason, whose size does not grow with
the number of shards; the per-shard table is on request. Counts are the writers' own (the
manifests'); the asset checks recount the files independently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb

from asagi_dagster import catalog
from asagi_dagster.query import connect, refresh_views
from asagi_dagster.storage import Storage

# What the report reads of each entry: no manifest JSON but the models'.
REPORT_COLUMNS = ["kind", "rows_in", "rows_out", "rows_rejected", "rejected_by_reason", "rule_stats", "model_manifest"]
MODEL_FIELDS = {"asset", "stage", "steps", "examples", "final_loss", "resumed_from", "model_url"}


def _load(storage: Storage, con: duckdb.DuckDBPyConnection, database: str | None) -> None:
    catalog.load_latest(storage, con, "catalog", REPORT_COLUMNS)
    if database:  # the report's database keeps its tables for ad-hoc SQL
        refresh_views(con, storage)


def summary_report(storage: Storage, database: str | None) -> dict:
    """Partitions and rows per asset, rejected rows per asset and reason, rule pass rates
    per asset and rule (summed over partitions), and the trained models."""
    with connect(storage, database) as con:
        _load(storage, con, database)
        assets = con.execute(
            """SELECT asset, count(*), sum(rows_in), sum(rows_out), sum(rows_rejected)
               FROM catalog WHERE kind = 'rows' GROUP BY asset ORDER BY asset"""
        ).fetchall()
        reasons = con.execute(
            """SELECT asset, e.key, sum(e.value) FROM (SELECT asset, unnest(map_entries(rejected_by_reason)) AS e FROM catalog)
               GROUP BY ALL ORDER BY asset, e.key"""
        ).fetchall()
        rules = con.execute(
            """SELECT asset, s.rule, sum(s.checked), sum(s.rejected), sum(s.passed)
               FROM (SELECT asset, unnest(rule_stats) AS s, generate_subscripts(rule_stats, 1) AS position FROM catalog)
               GROUP BY asset, s.rule ORDER BY asset, min(position), s.rule"""
        ).fetchall()
        models = _models(con)
    return {
        "assets": [{"asset": a, "partitions": n, "rows_in": int(i), "rows_out": int(o), "rows_rejected": int(r)} for a, n, i, o, r in assets],
        "rejected_by_reason": [{"asset": a, "reason": reason, "rows": int(n)} for a, reason, n in reasons],
        "rule_pass_rates": [{"asset": a, "rule": rule, "checked": int(c), "rejected": int(r), "passed": int(p)} for a, rule, c, r, p in rules],
        "models": models,
    }


def shard_report(storage: Storage, database: str | None) -> list[dict]:
    """Per asset and partition: rows in, out and rejected by reason, and rule statistics."""
    with connect(storage, database) as con:
        _load(storage, con, database)
        rows = con.execute(
            """SELECT asset, partition, rows_in, rows_out, rows_rejected, rejected_by_reason, rule_stats
               FROM catalog WHERE kind = 'rows' ORDER BY asset, partition"""
        ).fetchall()
    return [
        {
            "asset": asset,
            "partition": partition,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rows_rejected": rejected,
            "rejected_by_reason": dict(sorted(by_reason.items())),
            "rule_stats": rule_stats,
        }
        for asset, partition, rows_in, rows_out, rejected, by_reason, rule_stats in rows
    ]


def model_report(storage: Storage) -> list[dict]:
    """The trained models under the root: stage, steps, examples, final loss, folder."""
    with connect(storage) as con:
        catalog.load_latest(storage, con, "catalog", ["kind", "model_manifest"])
        return _models(con)


def _models(con: duckdb.DuckDBPyConnection) -> list[dict]:
    found = con.execute("SELECT model_manifest FROM catalog WHERE kind = 'model' ORDER BY asset, partition").fetchall()
    return [catalog.manifest_of(text).model_dump(include=MODEL_FIELDS) for (text,) in found]


def synthesis_note(summary: dict, corpora: list[str], tiny_generators: bool) -> str | None:
    """One line on the synthesized corpora when the embedded default's tiny random models
    wrote them: nearly everything rejected is what should happen, not a broken pipeline."""
    made = [a for a in summary["assets"] if a["asset"] in corpora]
    if not tiny_generators or not made:
        return None
    accepted, generated = sum(a["rows_out"] for a in made), sum(a["rows_in"] for a in made)
    return (
        f"synthesized corpora: {accepted} of {generated} rows accepted. The profile's generators are the builtin tiny "
        "random models, whose text is noise that validation rightly rejects; a real model (configs/cluster.example.yaml) fills them."
    )


def format_summary(summary: dict, notes: Sequence[str] = ()) -> str:
    if not summary["assets"] and not summary["models"]:
        return "no materialized assets yet"
    header = f"{'asset':<24} {'partitions':>10} {'in':>12} {'out':>12} {'rejected':>12}"
    lines = [header, "-" * len(header)]
    for a in summary["assets"]:
        lines.append(f"{a['asset']:<24} {a['partitions']:>10} {a['rows_in']:>12} {a['rows_out']:>12} {a['rows_rejected']:>12}")
    if summary["rejected_by_reason"]:
        lines += ["", "rejected rows by reason"]
        lines += [f"{r['asset']:<24} {r['reason']:<28} {r['rows']:>12}" for r in summary["rejected_by_reason"]]
    if summary["rule_pass_rates"]:
        lines += ["", "rule pass rates (of the rows that reached each rule, all partitions)"]
        by_asset: dict[str, list[str]] = {}
        for r in summary["rule_pass_rates"]:
            by_asset.setdefault(r["asset"], []).append(f"{r['rule']}={r['passed']}/{r['checked']}")
        lines += [f"{asset:<24} {', '.join(rates)}" for asset, rates in by_asset.items()]
    lines += _model_lines(summary["models"])
    lines += ["", *notes, "per shard: asagi report --shards"]
    return "\n".join(lines)


def format_table(rows: list[dict], models: Sequence[dict] = ()) -> str:
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
    return "\n".join(lines + _model_lines(models))


def _model_lines(models: Sequence[dict]) -> list[str]:
    if not models:
        return []
    lines = ["", "trained models"]
    for m in models:
        loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.4f}"
        lines.append(f"{m['asset']:<24} {m['steps']:>5} steps on {m['examples']} examples, final loss {loss}: {m['model_url']}")
    return lines


def to_json(report: dict | list) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1)
