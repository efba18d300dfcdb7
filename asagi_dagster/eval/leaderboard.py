"""Our models beside the published ones, per benchmark metric.

A judge score is comparable only with scores from the same judge (and prompt), so a
judge metric's column is per judge and its header names it: published scores sit under
the judge of their source, ours under the judge the profile configured (or under "not
computed" when none was). ROUGE-L needs no judge and has one column per benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.previews import figure_data_uri

PUBLISHED_JUDGE = "as published"  # the judge of a published score, not named in our sources
ROUGE_L = "ROUGE-L"
SCALE = {"LLM %": 100.0, "ROUGE-L": 100.0, "LLM /5": 5.0}  # each metric's whole range


SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("source", pa.string()),
        ("column", pa.string()),
        ("benchmark", pa.string()),
        ("metric", pa.string()),
        ("judge", pa.string()),
        ("value", pa.float64()),
        ("status", pa.string()),
    ]
)


@dataclass(frozen=True)
class Column:
    benchmark: str
    metric: str
    judge: str | None  # None for ROUGE-L

    @property
    def unit(self) -> str:
        return BENCHMARKS[self.benchmark].judge_unit if self.metric == "llm" else ROUGE_L

    @property
    def header(self) -> str:
        judge = f" (judge: {self.judge})" if self.judge else ""
        return f"{BENCHMARKS[self.benchmark].label} {self.unit}{judge}"


def entries(ours: list[dict]) -> list[dict]:
    """Published and our scores as (model, source, column, value) rows. ``ours``: the
    latest history row per model, benchmark and metric."""
    rows = []
    for model in published_models():
        for benchmark in BENCHMARKS.values():
            for metric, value in sorted(benchmark.published.get(model, {}).items(), key=lambda item: item[0] != "rougel"):
                judge = PUBLISHED_JUDGE if metric == "llm" else None
                column = Column(benchmark.name, metric, judge)
                rows.append({"model": model, "source": benchmark.published_source, "column": column, "value": value, "status": "published"})
    for row in ours:
        judge = None
        if row["metric"] == "llm":
            judge = row["judge_model"] if row["status"] == "computed" else "not computed"
        rows.append(
            {
                "model": row["model"],
                "source": "this project",
                "column": Column(row["benchmark"], row["metric"], judge),
                "value": row["value"],
                "status": row["status"],
            }
        )
    return rows


def published_models() -> list[str]:
    """Every model with a published score, in the benchmarks' order."""
    return list(dict.fromkeys(model for benchmark in BENCHMARKS.values() for model in benchmark.published))


def stored(row: dict) -> dict:
    """An entry as a row of the leaderboard's Parquet file."""
    c = row["column"]
    return {
        "model": row["model"],
        "source": row["source"],
        "column": c.header,
        "benchmark": c.benchmark,
        "metric": c.metric,
        "judge": c.judge,
        "value": row["value"],
        "status": row["status"],
    }


def columns_of(rows: list[dict]) -> list[Column]:
    order = {b: i for i, b in enumerate(BENCHMARKS)}
    return sorted({r["column"] for r in rows}, key=lambda c: (order[c.benchmark], c.metric != "rougel", c.judge or ""))


def markdown(rows: list[dict], notes: dict[str, str] | None = None) -> str:
    """One row per benchmark metric (and judge), one column per model: the published
    models, then ours, marked; below, where each comes from (``notes``: more on ours).
    Narrow enough to read whole in the UI and a terminal."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    ours = [m for m in models if any(r["model"] == m and r["status"] != "published" for r in rows)]
    cells = {(r["model"], r["column"]): r for r in rows}
    names = [f"{m} (ours)" if m in ours else m for m in models]
    lines = ["| benchmark | metric | judge | " + " | ".join(names) + " |", "|---|---|---|" + "---:|" * len(models)]
    for column in columns_of(rows):
        values = [_cell(column, cells.get((model, column))) for model in models]
        lines.append(f"| {BENCHMARKS[column.benchmark].label} | {column.unit} | {column.judge or '-'} | " + " | ".join(values) + " |")
    published = [m for m in models if m not in ours]
    sources = list(dict.fromkeys(r["source"] for r in rows if r["status"] == "published"))
    if published:
        lines += ["", f"Published: {', '.join(published)}, from the {' and '.join(sources)}."]
    for model in ours:
        lines.append(f"Ours: {model}, this project{': ' + notes[model] if notes and notes.get(model) else ''}.")
    return "\n".join(lines)


def our_notes(config) -> dict[str, str]:
    """What a reader must know of each of our evaluated models: whether it starts from the
    builtin tiny random models (the embedded default), whose scores are noise."""
    notes = {}
    for name in config.evaluation.models:
        if name in ("vlm_stage1", "vlm_stage2") and config.training is not None:
            starts = [config.models[role].id for role in (config.training.vision_role, config.training.llm_role)]
        else:
            starts = [config.models[name].id] if name in config.models else []
        if starts and all(start.startswith("builtin:") for start in starts):
            notes[name] = "the tiny demo model (random weights, trained for a few steps): its scores are noise"
    return notes


def _cell(column: Column, entry: dict | None) -> str:
    if entry is None:
        return ""
    if entry["value"] is None:
        return "not computed"
    five_point = column.unit == "LLM /5"
    return f"{entry['value']:.2f}" if five_point else f"{entry['value']:.1f}"


def bar_chart_png(rows: list[dict]) -> str:
    """One panel per column with a number in it, our models' bars in another colour; a PNG
    data URI for the asset's Markdown metadata."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = [c for c in columns_of(rows) if any(r["column"] == c and r["value"] is not None for r in rows)]
    per_row = 3
    lines = -(-len(columns) // per_row)
    figure, axes = plt.subplots(lines, per_row, figsize=(4.2 * per_row, 2.6 * lines), dpi=80, squeeze=False)
    for axis in axes.flat[len(columns) :]:
        axis.set_visible(False)
    for axis, column in zip(axes.flat, columns):
        cells = [r for r in rows if r["column"] == column and r["value"] is not None]
        colours = ["#4c72b0" if r["status"] == "published" else "#dd8452" for r in cells]
        axis.barh([r["model"] for r in cells], [r["value"] for r in cells], color=colours, height=0.6)
        axis.set_xlim(0, SCALE[column.unit])  # the metric's whole scale: a lone bar is not a full-width bar
        for y, cell in enumerate(cells):
            axis.text(cell["value"] + SCALE[column.unit] * 0.01, y, _cell(column, cell), va="center", fontsize=7)
        axis.set_ylim(max(len(cells), len(published_models()) + 1) - 0.5, -0.5)  # top down; a lone bar stays one bar high
        axis.set_title(column.header, fontsize=8)
        axis.tick_params(labelsize=7)
    axes.flat[0].legend(handles=[Patch(color="#4c72b0", label="published"), Patch(color="#dd8452", label="this project")], loc="lower right", fontsize=6)
    return figure_data_uri(figure)


def latest_scores_sql(history_glob: str) -> str:
    """The newest history row per model, benchmark and metric."""
    return f"""
        SELECT * FROM read_parquet('{history_glob}')
        QUALIFY row_number() OVER (PARTITION BY model, benchmark, metric ORDER BY evaluated_at DESC) = 1
        ORDER BY model, benchmark, metric
    """
