"""JA-VLM-Bench-In-the-Wild (Sakana AI): 50 questions on 42 photos of Japan. eval-mm's
question id is the row index."""

from __future__ import annotations

from collections.abc import Iterator

from asagi_dagster.benchmarks.base import Benchmark, RejectedItem, make_item
from asagi_dagster.benchmarks.published import ASAGI_MODEL_CARD, asagi_model_card


class JaVlmBenchInTheWild(Benchmark):
    name, hub_id, split, judge, label = "ja-vlm-bench-in-the-wild", "SakanaAI/JA-VLM-Bench-In-the-Wild", "test", "likert", "JVB-ItW"
    published, published_source = asagi_model_card(rougel=(48.8, 49.6, 50.8, 52.3, 37.6), llm=(3.26, 3.38, 3.44, 3.69, 3.85)), ASAGI_MODEL_CARD

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        yield make_item(index, row.get("image"), row.get("question"), row.get("answer"))


BENCHMARK = JaVlmBenchInTheWild()
