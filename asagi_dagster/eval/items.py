"""Reading a benchmark's items (``asagi_dagster.benchmarks``) from its dataset's Parquet
files in the hub's layout (``data/<split>-*.parquet``, images as ``{bytes, path}``
structs): from a local folder, or from the hub when the profile allows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from asagi_dagster.benchmarks import Benchmark, RejectedItem
from asagi_dagster.eval.settings import BenchmarkSource
from asagi_dagster.settings import ConfigError


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
