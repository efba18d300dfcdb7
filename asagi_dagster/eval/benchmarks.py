"""The three benchmarks as eval-mm 0.4.1 reads them: a small class each, registered by name.

Each reads its dataset's Parquet files in the hub's layout (``data/<split>-*.parquet``,
images as ``{bytes, path}`` structs) from a local folder, or from the hub when the
profile allows it, and yields one item per question, with eval-mm's question ids:
- japanese-heron-bench: the dataset's ``question_id``; reference = the
  gpt-4-0125-preview answer; category (conv / detail / complex) and context kept for
  the judge;
- ja-vlm-bench-in-the-wild: the row index;
- ja-vg-vqa-500: one item per QA of an image (``qa_id``), as eval-mm flattens it.
A row that cannot make an item (no image, no question, no reference, an image that
does not decode) becomes a rejection with its reason.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from asagi_dagster.config import BenchmarkSource, ConfigError

VERSION = 1
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


@dataclass(frozen=True)
class RejectedItem:
    question_id: str
    reason: str
    detail: str


class Benchmark(ABC):
    name: str
    hub_id: str
    split: str
    judge: str  # "heron" (pairwise 1-10 against the reference) or "likert" (1-5)

    @abstractmethod
    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        """The items (or rejections) of one dataset row; ``index`` is the row's position."""


class JapaneseHeronBench(Benchmark):
    name, hub_id, split, judge = "japanese-heron-bench", "Silviase/Japanese-Heron-Bench", "train", "heron"
    reference_model = "gpt-4-0125-preview"

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        answers = row.get("answer") or {}
        yield _item(
            row["question_id"],
            row.get("image"),
            row.get("text"),
            answers.get(self.reference_model),
            category=row.get("category") or "",
            context=row.get("context") or "",
        )


class JaVlmBenchInTheWild(Benchmark):
    name, hub_id, split, judge = "ja-vlm-bench-in-the-wild", "SakanaAI/JA-VLM-Bench-In-the-Wild", "test", "likert"

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        yield _item(index, row.get("image"), row.get("question"), row.get("answer"))


class JaVgVqa500(Benchmark):
    name, hub_id, split, judge = "ja-vg-vqa-500", "SakanaAI/JA-VG-VQA-500", "test", "likert"

    def rows_to_items(self, row: dict, index: int) -> Iterator[dict | RejectedItem]:
        qas = row.get("qas") or []
        if not qas:
            yield RejectedItem(f"image-{row.get('image_id', index)}", "no_questions", "the image has no QA pairs")
        for qa in qas:
            yield _item(qa.get("qa_id"), row.get("image"), qa.get("question"), qa.get("answer"), image_id=row.get("image_id"))


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (JapaneseHeronBench(), JaVlmBenchInTheWild(), JaVgVqa500())}


def _item(
    question_id, image: dict | None, question: str | None, reference: str | None, image_id=None, category: str = "", context: str = ""
) -> dict | RejectedItem:
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


def dataset_folder(benchmark: Benchmark, source: BenchmarkSource, allow_hub: bool) -> Path:
    """The local folder with the benchmark's Parquet files: the configured one, or a
    pinned snapshot of the hub dataset (downloaded once into the hub cache)."""
    if source.path:
        folder = Path(source.path)
        if not folder.is_dir():
            raise ConfigError(f"{benchmark.name}: {folder} is not a folder (write the stand-ins with `asagi sample`, or download the dataset)")
        return folder
    if not allow_hub:
        raise ConfigError(f"{benchmark.name}: no path, and evaluation.allow_hub is false")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source.hub_id or benchmark.hub_id, repo_type="dataset", revision=source.revision, allow_patterns=["*.parquet"]))


def split_files(folder: Path, split: str) -> list[Path]:
    """The split's Parquet files: ``<split>-*.parquet`` or any under a ``<split>/`` folder."""
    files = sorted(folder.rglob("*.parquet"))
    chosen = [f for f in files if f.name.startswith(f"{split}-") or split in f.relative_to(folder).parts[:-1]]
    if not chosen:
        found = ", ".join(str(f.relative_to(folder)) for f in files) or "none"
        raise ConfigError(f"{folder}: no Parquet file of split {split!r} (found: {found})")
    return chosen


def read_items(benchmark: Benchmark, folder: Path, limit: int | None = None) -> Iterator[dict | RejectedItem]:
    """Items and rejections in dataset order; ``limit`` stops after that many of them."""
    index = seen = 0
    for path in split_files(folder, benchmark.split):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                for item in benchmark.rows_to_items(row, index):
                    if limit is not None and seen >= limit:
                        return
                    seen += 1
                    yield item
                index += 1
