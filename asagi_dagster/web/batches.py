"""Batches of inbox files: the partitions of the per-file steps (D111).

A batch is made at registration from new shard files of one inbox folder, in name
order, up to ``files_per_partition`` of them; its key is its first file's key, so at one
file a partition the keys are the files' own. A batch never changes once registered:
its file list, with each file's fingerprint at registration, is committed to the storage
root (``_batches/<folder>/<key>.json``) before Dagster learns the key, and files arriving
later form new batches. A crash between the two leaves a committed list without its
partition, which the next registration adds.

Which files of a folder are registered is read from that folder's lists only, so a tick
reads the batches of the inbox folders its window touches, not every batch: for Common
Crawl's layout (a segment folder of about 900 files) one or two lists per folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asagi_dagster.storage import Storage
from asagi_dagster.web.inbox import ShardFile, folder_of

BATCHES = "_batches"
TOP_FOLDER = "_"  # the list folder of files at the top of the inbox (no folder name starts with "_": shard_key)


@dataclass(frozen=True, slots=True)
class Batch:
    key: str
    files: tuple[ShardFile, ...]  # in name order; the first file's key is the batch's


def make_batches(new: Iterable[ShardFile], files_per_partition: int) -> list[Batch]:
    """New files grouped by inbox folder, in name order, ``files_per_partition`` at most
    a batch."""
    if files_per_partition < 1:
        raise ValueError(f"files_per_partition must be at least 1, not {files_per_partition}")
    by_folder: dict[str, list[ShardFile]] = {}
    for shard in sorted(new, key=lambda s: s.key):
        by_folder.setdefault(folder_of(shard.key), []).append(shard)
    batches = []
    for files in by_folder.values():
        for start in range(0, len(files), files_per_partition):
            part = tuple(files[start : start + files_per_partition])
            batches.append(Batch(part[0].key, part))
    return sorted(batches, key=lambda b: b.key)


def _list_folder(storage: Storage, folder: str) -> str:
    return storage.path(BATCHES, folder or TOP_FOLDER)


def batch_path(storage: Storage, key: str) -> str:
    return f"{_list_folder(storage, folder_of(key))}/{key}.json"


def commit_batches(storage: Storage, batches: Iterable[Batch]) -> None:
    """Each batch's file list, written whole (atomically) before its key is registered."""
    for batch in batches:
        files = [{"key": f.key, "url": f.url, "fingerprint": f.fingerprint} for f in batch.files]
        storage.write_json(batch_path(storage, batch.key), {"key": batch.key, "files": files})


def read_batch(storage: Storage, key: str) -> Batch:
    raw = storage.read_json(batch_path(storage, key))
    return Batch(raw["key"], tuple(ShardFile(f["key"], f["url"], f["fingerprint"]) for f in raw["files"]))


def folder_batches(storage: Storage, folders: Iterable[str]) -> list[Batch]:
    """Every batch committed for these inbox folders: one listing and one read a batch."""
    batches = []
    for folder in sorted(set(folders)):
        path = _list_folder(storage, folder)
        if not storage.fs.exists(path):
            continue
        for name in sorted(storage.fs.ls(path, detail=False, refresh=True)):
            if name.endswith(".json"):
                batches.append(read_batch(storage, name.rsplit("/", 1)[-1].removesuffix(".json")))
    return batches


def batch_of_file(batches: Iterable[Batch]) -> dict[str, str]:
    """Shard key -> the key of the batch that holds it."""
    return {shard.key: batch.key for batch in batches for shard in batch.files}
