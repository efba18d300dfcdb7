"""Benchmark decontamination: the perceptual hashes of every evaluation image (and the
Visual Genome ids JA-VG-VQA-500 is built on), so no training image is a test image.

The evaluated benchmarks' images come from their items (``benchmark_items``), so each
benchmark is configured once, under ``evaluation.benchmarks``; benchmarks the profile
does not evaluate can still be named by path (``filters.decontamination.benchmarks``).
Hashes are made exactly as the screening step makes them (same safety limits, same
small decode), so a benchmark photo re-encoded or resized on the web still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from asagi_dagster.benchmarks import Benchmark
from asagi_dagster.core import Rejected, write_outcomes
from asagi_dagster.filters.images import decode_small, perceptual_hash, read_header
from asagi_dagster.filters.settings import BenchmarkImages, DecontaminationSettings, ImageSafetySettings
from asagi_dagster.storage import StageWriter

BENCHMARK_INDEX_VERSION = 1
BENCHMARK_INDEX = pa.schema(
    [
        ("record_id", pa.string()),  # <benchmark>/<image id, file or row>, <benchmark>/vg:<id or line>
        ("benchmark", pa.string()),
        ("image_phash", pa.int64()),  # null for an id-only row
        ("vg_image_id", pa.int64()),  # null for an image row
    ]
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class BenchmarkSourceError(ValueError):
    """A configured benchmark path that does not exist or cannot be read."""


def item_rows(benchmark: Benchmark, items: Iterable[dict], safety: ImageSafetySettings) -> Iterator[tuple[str, dict | Rejected]]:
    """(record id, index row) for each distinct image of a benchmark's items (rows with
    ``image_id`` and ``bytes``, as ``benchmark_items`` stores them), and for a benchmark on
    Visual Genome each distinct image id; items sharing an image give one row."""
    images: set[str] = set()
    vg_ids: set[str] = set()
    for item in items:
        image_id, data = item["image_id"] or "", item["bytes"]
        digest = hashlib.sha256(data).hexdigest()
        if digest not in images:
            images.add(digest)
            yield _image_row(f"{benchmark.name}/{image_id or 'image'}:{digest[:12]}", benchmark.name, data, safety)
        if benchmark.vg_image_ids and image_id not in vg_ids:
            vg_ids.add(image_id)
            yield _vg_row(benchmark.name, image_id)


def _vg_row(name: str, image_id: str) -> tuple[str, dict | Rejected]:
    record_id = f"{name}/vg:{image_id}"
    try:
        vg_id = int(image_id)
    except ValueError:
        return record_id, Rejected("invalid_vg_image_id", f"not an integer Visual Genome id: {image_id[:100]!r}")
    return record_id, {"record_id": record_id, "benchmark": name, "image_phash": None, "vg_image_id": vg_id}


def _image_row(record_id: str, name: str, data: bytes, safety: ImageSafetySettings) -> tuple[str, dict | Rejected]:
    """The hash row of one image, or why it has none (it does not stop the rest)."""
    try:
        image, _ = read_header(data, safety)
        phash = perceptual_hash(decode_small(image, safety.thumbnail_side))
    except Rejected as rejected:
        return record_id, rejected
    return record_id, {"record_id": record_id, "benchmark": name, "image_phash": phash, "vg_image_id": None}


def benchmark_rows(name: str, paths: BenchmarkImages, safety: ImageSafetySettings) -> Iterator[tuple[str, dict | Rejected]]:
    """(record id, index row) for a benchmark named by path; an unreadable image comes as
    Rejected rather than stopping the rest."""
    if paths.images:
        for item_id, data in _images(Path(paths.images)):
            yield _image_row(f"{name}/{item_id}", name, data, safety)
    if paths.vg_image_ids:
        for line_no, vg_id in _vg_ids(Path(paths.vg_image_ids)):
            record_id = f"{name}/vg:{line_no}"
            yield record_id, {"record_id": record_id, "benchmark": name, "image_phash": None, "vg_image_id": vg_id}


def _images(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            yield file.relative_to(path).as_posix(), file.read_bytes()
    elif path.suffix == ".parquet" and path.is_file():
        yield from _parquet_images(path)
    else:
        raise BenchmarkSourceError(f"benchmark images not found at {path}: expected a folder of images or a .parquet file")


def _parquet_images(path: Path) -> Iterator[tuple[str, bytes]]:
    """Rows of a Parquet file with an ``image`` column: bytes, or a Hugging Face
    datasets image struct {bytes, path}."""
    parquet = pq.ParquetFile(path)
    if "image" not in parquet.schema_arrow.names:
        raise BenchmarkSourceError(f"{path} has no 'image' column (columns: {', '.join(parquet.schema_arrow.names)})")
    row = 0
    for batch in parquet.iter_batches(batch_size=64, columns=["image"]):
        for value in batch.column("image").to_pylist():
            data = value.get("bytes") if isinstance(value, dict) else value
            yield f"row{row}", data or b""
            row += 1


def _vg_ids(path: Path) -> Iterator[tuple[int, int]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BenchmarkSourceError(f"cannot read Visual Genome ids at {path}: {exc.strerror}") from None
    for line_no, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield line_no, int(line.strip())
            except ValueError:
                raise BenchmarkSourceError(f"{path}:{line_no}: not an integer image id: {line.strip()!r}") from None


def write_benchmark_index(items: Mapping[Benchmark, Iterable[dict]], settings: DecontaminationSettings, safety: ImageSafetySettings, out: StageWriter) -> None:
    """The index of the evaluated benchmarks' items, then of the benchmarks named by path."""
    for benchmark in sorted(items, key=lambda b: b.name):
        write_outcomes(out, item_rows(benchmark, items[benchmark], safety))
    for name, paths in sorted(settings.benchmarks.items()):
        write_outcomes(out, benchmark_rows(name, paths, safety))
