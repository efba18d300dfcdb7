"""Our models beside the published ones, per benchmark metric.

A judge score is comparable only with scores from the same judge (and prompt), so a
judge metric's column is per judge and its header names it: published scores sit under
the judge of their source, ours under the judge the profile configured (or under "not
computed" when none was). ROUGE-L needs no judge and has one column per benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from asagi_dagster.previews import figure_data_uri

# The Asagi model card's table (llm-jp-eval-mm): Heron-Bench LLM (%), JA-VLM-Bench-In-the-Wild
# ROUGE-L and LLM (/5), JA-VG-VQA-500 ROUGE-L and LLM (/5).
PUBLISHED_SOURCE = "Asagi model card (llm-jp-eval-mm)"
PUBLISHED_JUDGE = "as published"  # the card's judge, not named in our sources
PUBLISHED = {
    "Asagi-2B": (44.7, 48.8, 3.26, 53.7, 3.69),
    "Asagi-4B": (49.3, 49.6, 3.38, 55.6, 3.78),
    "Asagi-14B": (55.8, 50.8, 3.44, 56.8, 3.84),
    "llm-jp-3-vila-14b": (57.2, 52.3, 3.69, 16.2, 3.62),
    "GPT-4o": (87.6, 37.6, 3.85, 12.1, 3.58),
}
PUBLISHED_COLUMNS = (
    ("japanese-heron-bench", "llm"),
    ("ja-vlm-bench-in-the-wild", "rougel"),
    ("ja-vlm-bench-in-the-wild", "llm"),
    ("ja-vg-vqa-500", "rougel"),
    ("ja-vg-vqa-500", "llm"),
)
SHORT = {"japanese-heron-bench": "Heron", "ja-vlm-bench-in-the-wild": "JVB-ItW", "ja-vg-vqa-500": "VG-VQA"}
UNIT = {("japanese-heron-bench", "llm"): "LLM %", "rougel": "ROUGE-L", "llm": "LLM /5"}
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
        return UNIT.get((self.benchmark, self.metric)) or UNIT[self.metric]

    @property
    def header(self) -> str:
        judge = f" (judge: {self.judge})" if self.judge else ""
        return f"{SHORT[self.benchmark]} {self.unit}{judge}"


def entries(ours: list[dict]) -> list[dict]:
    """Published and our scores as (model, source, column, value) rows. ``ours``: the
    latest history row per model, benchmark and metric."""
    rows = []
    for model, values in PUBLISHED.items():
        for (benchmark, metric), value in zip(PUBLISHED_COLUMNS, values):
            judge = PUBLISHED_JUDGE if metric == "llm" else None
            rows.append({"model": model, "source": PUBLISHED_SOURCE, "column": Column(benchmark, metric, judge), "value": value, "status": "published"})
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
    order = {b: i for i, b in enumerate(SHORT)}
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
        lines.append(f"| {SHORT[column.benchmark]} | {column.unit} | {column.judge or '-'} | " + " | ".join(values) + " |")
    published = [m for m in models if m not in ours]
    if published:
        lines += ["", f"Published: {', '.join(published)}, from the {PUBLISHED_SOURCE}."]
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
    five_point = column.metric == "llm" and column.benchmark != "japanese-heron-bench"
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
        axis.set_ylim(max(len(cells), len(PUBLISHED) + 1) - 0.5, -0.5)  # top down; a lone bar stays one bar high
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
