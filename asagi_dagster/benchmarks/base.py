"""What a benchmark is to this project: its dataset on the hub, how a dataset row becomes
items as eval-mm 0.4.1 reads them, how its answers are judged, how the leaderboard
labels it, and the published scores it is compared with.

The package imports nothing of the library but ``core``, so the profile can check benchmark names against
the registry without depending on the evaluation stage.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from PIL import Image

ITEMS_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),  # as eval-mm's prediction.jsonl writes it
        ("image_id", pa.string()),
        ("bytes", pa.binary()),  # the image file as the dataset stores it
        ("question", pa.string()),
        ("reference", pa.string()),
        ("category", pa.string()),  # Heron-Bench: conv / detail / complex; else empty
        ("context", pa.string()),  # Heron-Bench: the image description its judge reads
    ]
)
ITEMS_VERSION = 1

# How answers are judged (asagi_dagster.eval.judge_client): "heron", pairwise 1-10 against
# the reference, scored as a percentage of it; "likert", 1-5.
JUDGE_STYLES = ("heron", "likert")
# The metrics a benchmark is scored on: ROUGE-L against the reference, and the judge's score.
METRICS = ("rougel", "llm")
# Why a row gives no item: the reasons ``make_item`` gives.
ITEM_REJECTIONS = ("image_missing", "question_missing", "reference_missing", "image_unreadable")


@dataclass(frozen=True)
class RejectedItem:
    question_id: str
    reason: str
    detail: str


class Benchmark(ABC):
    name: str  # the partition key and the profile's evaluation.benchmarks key
    hub_id: str  # the dataset eval-mm reads
    split: str
    judge: str  # one of JUDGE_STYLES
    label: str  # the leaderboard's short name
    rejections: tuple[str, ...] = ITEM_REJECTIONS  # every reason rows_to_items can give
    # Whether an item's image_id is a Visual Genome image id: decontamination then also
    # removes training pairs with that id (datasets built on Visual Genome carry it).
    vg_image_ids: bool = False
    # Published scores to show beside ours: model -> metric -> value, in the judge's unit.
    published: dict[str, dict[str, float]] = {}
    published_source: str = ""

    @property
    def judge_unit(self) -> str:
        return "LLM %" if self.judge == "heron" else "LLM /5"

    @abstractmethod
    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        """The items (or rejections) of one dataset row; ``index`` is the row's position."""


def make_item(
    question_id, image: dict | None, question: str | None, reference: str | None, image_id=None, category: str = "", context: str = ""
) -> dict | RejectedItem:
    """A row of ITEMS_SCHEMA, or why the row cannot be one (ITEM_REJECTIONS)."""
    qid = str(question_id)
    data = (image or {}).get("bytes")
    if not data:
        return RejectedItem(qid, "image_missing", "the row has no image bytes")
    if not (question or "").strip():
        return RejectedItem(qid, "question_missing", "empty question")
    if not (reference or "").strip():
        return RejectedItem(qid, "reference_missing", "empty reference answer")
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as exc:
        return RejectedItem(qid, "image_unreadable", f"{type(exc).__name__}: {exc}")
    name = (image or {}).get("path") or ""
    return {
        "question_id": qid,
        "image_id": str(image_id) if image_id is not None else name,
        "bytes": data,
        "question": question,
        "reference": reference,
        "category": category,
        "context": context,
    }
