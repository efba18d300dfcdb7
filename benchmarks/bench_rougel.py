"""ROUGE-L scoring throughput: ours versus eval-mm 0.4.1's RougeLScorer, side by side in one
run, on the same 1,000 Japanese pairs, in the same interpreter (the eval-mm environment,
which our metrics module runs in too: it imports only fugashi, rouge-score and emoji).

The pairs are the Heron-Bench fixture's real answers of three models against the
references, cycled to ``--pairs`` with a varying suffix so no two are identical. Both
sides must give the same scores (checked); the figure is pairs per second, alternating
the two scorers ``--repeats`` times and taking each one's median.

    bash scripts/evalmm_env.sh
    PYTHONPATH=. .venv-evalmm/bin/python -m benchmarks.bench_rougel [--pairs 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "asagi_sample" / "japanese_heron_bench"
MODELS = ("claude3_0404_ja", "gemini_0404_ja", "gpt4v_0404_ja")


def heron_pairs(count: int) -> tuple[list[str], list[str]]:
    def load(name: str) -> dict[int, str]:
        rows = [json.loads(line) for line in (FIXTURE / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        return {row["question_id"]: row["text"] for row in rows}

    references = load("answers_gpt4")
    base = [(references[i], answers[i]) for answers in map(load, MODELS) for i in sorted(references)]
    pairs = [(ref, f"{pred}（{n // len(base)}）") for n, (ref, pred) in enumerate(base[i % len(base)] for i in range(count))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main() -> None:
    from eval_mm.metrics.rougel_scorer import RougeLScorer

    from asagi_dagster.eval.metrics import rougel_scores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    refs, preds = heron_pairs(args.pairs)
    scorers = {"eval-mm": lambda: [float(s) for s in RougeLScorer.score(refs, preds)], "ours": lambda: rougel_scores(refs, preds)}
    times: dict[str, list[float]] = {name: [] for name in scorers}
    results = {}
    for _ in range(args.repeats):
        for name, score in scorers.items():
            began = time.perf_counter()
            results[name] = score()
            times[name].append(time.perf_counter() - began)
    worst = max(abs(a - b) for a, b in zip(results["ours"], results["eval-mm"]))
    print(f"{args.pairs} pairs (Heron-Bench answers vs references), {args.repeats} alternating runs; largest score difference {worst:.1e}")
    for name, ts in times.items():
        print(f"{name:>8}: {args.pairs / statistics.median(ts):8.0f} pairs/s (median {statistics.median(ts):.2f} s)")
    print(f"ours / eval-mm: {statistics.median(times['eval-mm']) / statistics.median(times['ours']):.1f}x")


if __name__ == "__main__":
    main()
