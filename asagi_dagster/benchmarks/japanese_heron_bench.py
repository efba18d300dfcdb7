"""Japanese Heron-Bench: 103 questions on 21 images, in three categories (conv, detail,
complex). Items keep eval-mm's ``question_id``; the reference is the gpt-4-0125-preview
answer, and the category and image description (context) go to the judge."""

from __future__ import annotations

from collections.abc import Iterator

from asagi_dagster.benchmarks.base import Benchmark, RejectedItem, make_item
from asagi_dagster.benchmarks.published import ASAGI_MODEL_CARD, asagi_model_card


class JapaneseHeronBench(Benchmark):
    name, hub_id, split, judge, label = "japanese-heron-bench", "Silviase/Japanese-Heron-Bench", "train", "heron", "Heron"
    reference_model = "gpt-4-0125-preview"
    published, published_source = asagi_model_card(llm=(44.7, 49.3, 55.8, 57.2, 87.6)), ASAGI_MODEL_CARD

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        answers = row.get("answer") or {}
        yield make_item(
            row["question_id"],
            row.get("image"),
            row.get("text"),
            answers.get(self.reference_model),
            category=row.get("category") or "",
            context=row.get("context") or "",
        )


BENCHMARK = JapaneseHeronBench()
