"""JA-VG-VQA-500 (Sakana AI): 500 Visual Genome images with several short-answer QAs
each. eval-mm flattens it to one item per QA (``qa_id``); the image id is the Visual
Genome id, which decontamination also reads."""

from __future__ import annotations

from collections.abc import Iterator

from asagi_dagster.benchmarks.base import ITEM_REJECTIONS, Benchmark, RejectedItem, make_item
from asagi_dagster.benchmarks.published import ASAGI_MODEL_CARD, asagi_model_card


class JaVgVqa500(Benchmark):
    name, hub_id, split, judge, label = "ja-vg-vqa-500", "SakanaAI/JA-VG-VQA-500", "test", "likert", "VG-VQA"
    rejections = (*ITEM_REJECTIONS, "no_questions")
    vg_image_ids = True
    published, published_source = asagi_model_card(rougel=(53.7, 55.6, 56.8, 16.2, 12.1), llm=(3.69, 3.78, 3.84, 3.62, 3.58)), ASAGI_MODEL_CARD

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        qas = row.get("qas") or []
        if not qas:
            yield RejectedItem(f"image-{row.get('image_id', index)}", "no_questions", "the image has no QA pairs")
        for qa in qas:
            yield make_item(qa.get("qa_id"), row.get("image"), qa.get("question"), qa.get("answer"), image_id=row.get("image_id"))


BENCHMARK = JaVgVqa500()
