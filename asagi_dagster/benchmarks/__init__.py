"""The evaluation benchmarks, one module each, registered here by name.

A new benchmark is a module with a ``Benchmark`` subclass (dataset, item conversion,
judge style, label, published scores) and one line below; the profile's
``evaluation.benchmarks`` keys are checked against this registry.
"""

from __future__ import annotations

from asagi_dagster.benchmarks import ja_vg_vqa_500, ja_vlm_bench_in_the_wild, japanese_heron_bench
from asagi_dagster.benchmarks.base import ITEMS_SCHEMA, ITEMS_VERSION, Benchmark, RejectedItem
from asagi_dagster.core import by_name

BENCHMARKS: dict[str, Benchmark] = by_name(
    japanese_heron_bench.BENCHMARK,
    ja_vlm_bench_in_the_wild.BENCHMARK,
    ja_vg_vqa_500.BENCHMARK,
)

__all__ = ["BENCHMARKS", "ITEMS_SCHEMA", "ITEMS_VERSION", "Benchmark", "RejectedItem"]
