"""Open image-text datasets (STAIR Captions, Flickr-JP, Japanese Visual Genome, WIT,
GQA, VQA v2, ...) read into one common pair schema, so they go through the same
filters, dedup and decontamination as web pairs.

Every source row becomes one pair or one rejection (missing image file, empty text,
a row that cannot be read); rows are streamed, never the whole dataset in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from asagi_dagster.core import Rejected
from asagi_dagster.settings import LocalPath, Strict

DATASET_PAIRS_VERSION = 1
DATASET_PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),  # <dataset>/<record id>
        ("source", pa.string()),  # the dataset's name in the profile
        ("origin_id", pa.string()),  # the image's id within the dataset (rows sharing it share an origin)
        ("text", pa.string()),  # caption, or empty for VQA rows
        ("question", pa.string()),
        ("answer", pa.string()),
        ("language", pa.string()),
        ("licence", pa.string()),
        ("vg_image_id", pa.int64()),
        ("image_name", pa.string()),  # file name or path the image came from, when it had one
        ("bytes", pa.large_binary()),
    ]
)


class DatasetSource(Strict):
    """One open image-text dataset, mapped onto the common pair schema.

    Local data: ``path`` to a Parquet file (or folder of them), a JSONL file whose rows
    name image files under ``image_dir``, or an imagefolder (images plus
    metadata.jsonl with file_name). ``hub_id``: a Hugging Face dataset's Parquet files,
    only where the hub is reachable (never in tests or the embedded default).
    """

    format: Literal["parquet", "jsonl", "imagefolder"]
    path: LocalPath | None = None
    hub_id: str | None = None
    hub_revision: str | None = None
    image_dir: LocalPath | None = Field(None, description="Where image file names are resolved (jsonl; parquet with path-only images).")
    image_column: str = "image"  # bytes, a {bytes, path} struct, or a file name
    text_column: str | None = None  # a caption
    question_column: str | None = None  # or a question and its answer (VQA)
    answer_column: str | None = None
    id_column: str | None = Field(None, description="The record's own id; default: its row number.")
    image_id_column: str | None = Field(None, description="Rows sharing an image id share one origin (e.g. five captions of one photo).")
    vg_image_id_column: str | None = Field(None, description="Visual Genome image id, for decontamination against JA-VG-VQA-500.")
    language: Literal["ja", "en"] = "ja"
    licence: str
    rules: dict[str, dict] = Field({}, description="Overrides of filters.rules for this dataset, e.g. {ascii_only: {enabled: false}} for English.")

    @model_validator(mode="after")
    def _complete(self) -> DatasetSource:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("set exactly one of path (local data) and hub_id (Hugging Face)")
        if not self.text_column and not (self.question_column and self.answer_column):
            raise ValueError("set text_column, or question_column and answer_column")
        return self


class DatasetSourceError(ValueError):
    """A configured dataset that cannot be opened at all (missing path, no hub, bad columns)."""


def iter_dataset(name: str, source: DatasetSource) -> Iterator[tuple[str, dict | Rejected]]:
    """(pair id, common-schema row or Rejected) for every row of the dataset."""
    for index, raw in enumerate(_raw_rows(source)):
        record_id = str(raw.get(source.id_column)) if source.id_column and raw.get(source.id_column) is not None else f"row{index}"
        pair_id = f"{name}/{record_id}"
        if "__error__" in raw:
            yield pair_id, Rejected("unreadable_row", raw["__error__"])
            continue
        try:
            yield pair_id, _common_row(name, pair_id, record_id, raw, source)
        except Rejected as rejected:
            yield pair_id, rejected


def _common_row(name: str, pair_id: str, record_id: str, raw: dict, source: DatasetSource) -> dict:
    text = _text(raw, source.text_column)
    question, answer = _text(raw, source.question_column), _text(raw, source.answer_column)
    if not text and not (question and answer):
        raise Rejected("empty_text", f"no {source.text_column or f'{source.question_column}/{source.answer_column}'}")
    data, image_name = _image(raw.get(source.image_column), source)
    image_id = raw.get(source.image_id_column) if source.image_id_column else None
    vg = raw.get(source.vg_image_id_column) if source.vg_image_id_column else None
    try:
        vg_id = int(vg) if vg is not None else None
    except (TypeError, ValueError):
        raise Rejected("invalid_vg_image_id", repr(vg)[:100]) from None
    return {
        "pair_id": pair_id,
        "source": name,
        "origin_id": str(image_id) if image_id is not None else (image_name or record_id),
        "text": text,
        "question": question,
        "answer": answer,
        "language": source.language,
        "licence": source.licence,
        "vg_image_id": vg_id,
        "image_name": image_name,
        "bytes": data,
    }


def _text(raw: dict, column: str | None) -> str | None:
    value = raw.get(column) if column else None
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def _image(value, source: DatasetSource) -> tuple[bytes, str | None]:
    """Image bytes from inline bytes, a {bytes, path} struct, or a file under image_dir."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], value.get("path")
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise Rejected("missing_image", "empty image bytes")
        return bytes(value), None
    if not isinstance(value, str) or not value:
        raise Rejected("missing_image", f"no image in column {source.image_column!r}")
    path = Path(source.path or ".")
    folder = Path(source.image_dir) if source.image_dir else (path if path.is_dir() else path.parent)
    file = (folder / value).resolve()
    if not file.is_relative_to(folder.resolve()):
        raise Rejected("missing_image", f"{value} points outside {folder}")
    try:
        return file.read_bytes(), value
    except OSError as exc:
        raise Rejected("missing_image", f"{value}: {exc.strerror}") from None


def _raw_rows(source: DatasetSource) -> Iterator[dict]:
    if source.hub_id:
        yield from _parquet_rows(_hub_parquet_files(source))
        return
    assert source.path is not None  # DatasetSource sets exactly one of path and hub_id
    path = Path(source.path)
    if not path.exists():
        raise DatasetSourceError(f"dataset path {path} does not exist")
    if source.format == "parquet":
        yield from _parquet_rows(sorted(path.rglob("*.parquet")) if path.is_dir() else [path])
    elif source.format == "jsonl":
        yield from _jsonl_rows(path)
    else:  # imagefolder: images plus metadata.jsonl naming them in file_name
        yield from _jsonl_rows(path / "metadata.jsonl")


def _parquet_rows(files: list[Path]) -> Iterator[dict]:
    if not files:
        raise DatasetSourceError("no Parquet files found")
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=64):
            yield from batch.to_pylist()


def _jsonl_rows(path: Path) -> Iterator[dict]:
    if not path.is_file():
        raise DatasetSourceError(f"{path} is not a file")
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row = {"__error__": f"line {line_no}: {exc.msg}"}
            yield row if isinstance(row, dict) else {"__error__": f"line {line_no}: not a JSON object"}


def _hub_parquet_files(source: DatasetSource) -> list[Path]:
    """The dataset's Parquet files from the Hugging Face hub (cluster profiles only)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    assert source.hub_id is not None
    try:
        folder = snapshot_download(source.hub_id, repo_type="dataset", revision=source.hub_revision, allow_patterns=["*.parquet"])
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise DatasetSourceError(f"cannot fetch {source.hub_id} from the Hugging Face hub (is it reachable here?): {exc}") from None
    return sorted(Path(folder).rglob("*.parquet"))
