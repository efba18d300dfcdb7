"""Batches of inbox files: the partitions of the per-file steps (D111).

A batch is made at registration from new shard files of one inbox folder, in name
order, up to ``files_per_partition`` of them; its key is its first file's key. A batch
never changes once registered: the file list of a batch of more than one file is
committed to the storage root (``_batches/<folder>/<key>.json``) before Dagster learns
the key, and files arriving later form new batches. A batch of one file has no list: its
key is its file's, so at one file a partition (the demo, most tests) nothing is written
and the keys are the files' own. A crash between the list and the key leaves a list
without its partition: it is ignored, and its files are registered again as new ones.

The storage root, the catalog and the report stay per file: each file of a batch is
written, committed and recorded as a shard is; only Dagster's partitions are batches.

Which files of a folder are registered is read from that folder's lists only, so a tick
reads the lists of the inbox folders its window touches, not every list: for Common
Crawl's layout (a segment folder of about 900 files) one or two lists per folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from asagi_dagster.storage import Storage
from asagi_dagster.web.inbox import ShardFile, folder_of

BATCHES = "_batches"
TOP_FOLDER = "_"  # the list folder of files at the top of the inbox (no folder name starts with "_": shard_key)


@dataclass(frozen=True, slots=True)
class Batch:
    key: str
    files: tuple[ShardFile, ...]  # in name order; the first file's key is the batch's

    @property
    def file_keys(self) -> list[str]:
        return [f.key for f in self.files]


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
    """The list of each batch of more than one file, written whole (atomically) before its
    key is registered."""
    for batch in batches:
        if len(batch.files) > 1:
            files = [{"key": f.key, "url": f.url, "fingerprint": f.fingerprint} for f in batch.files]
            storage.write_json(batch_path(storage, batch.key), {"key": batch.key, "files": files})


def _parse(raw: dict) -> Batch:
    return Batch(raw["key"], tuple(ShardFile(f["key"], f["url"], f["fingerprint"]) for f in raw["files"]))


def _lists(storage: Storage, folder: str) -> list[str]:
    """The paths of the lists committed for one inbox folder, in name order: one listing
    (fresh: another process may have committed one since)."""
    try:
        names = storage.fs.ls(_list_folder(storage, folder), detail=False, refresh=True)
    except FileNotFoundError:  # no batch of several files in this folder yet
        return []
    return sorted(name for name in names if name.endswith(".json"))


def files_of(storage: Storage, keys: Iterable[str]) -> dict[str, list[str]]:
    """Each partition's files, in name order: its list's, or the key itself when it has
    none (a batch of one). One listing per inbox folder among the keys, and one read per
    list: a partition of one file costs no read."""
    keys = list(keys)
    listed = {path.rsplit("/", 1)[-1] for folder in {folder_of(key) for key in keys} for path in _lists(storage, folder)}
    return {key: _parse(storage.read_json(batch_path(storage, key))).file_keys if f"{key}.json" in listed else [key] for key in keys}


def folder_batches(storage: Storage, folders: Iterable[str]) -> list[Batch]:
    """Every list committed for these inbox folders: one listing a folder and one read a
    list, the reads all at once (900 lists for a flat inbox of 90,000 files at 100 a
    partition)."""
    paths = [path for folder in sorted(set(folders)) for path in _lists(storage, folder)]
    batches = []
    for path, blob in zip(paths, storage.read_many(paths), strict=True):
        if isinstance(blob, Exception):  # lists are never deleted: a real failure
            raise blob
        batches.append(_parse(json.loads(blob)))
    return batches


def registered_files(storage: Storage, partitions: Iterable[str]) -> Callable[[list[str]], set[str]]:
    """For ``plan_sync``: which of some shard keys are registered, given Dagster's
    partition keys. A file is registered when it is a partition (a batch of one) or in the
    list of one; the lists read are those of the files' folders. A list whose key is not a
    partition (a crash between the two) does not count: its files are new again, and
    batched again."""
    partitions = set(partitions)

    def registered(keys: list[str]) -> set[str]:
        listed = {key for batch in folder_batches(storage, map(folder_of, keys)) if batch.key in partitions for key in batch.file_keys}
        return {key for key in keys if key in partitions or key in listed}

    return registered


def batch_keys_of(storage: Storage, partitions: Iterable[str], files: Iterable[str]) -> dict[str, str]:
    """File -> the partition that holds it, for the registered ones among ``files``."""
    partitions, files = set(partitions), list(files)
    by_file = {key: batch.key for batch in folder_batches(storage, map(folder_of, files)) if batch.key in partitions for key in batch.file_keys}
    return {key: by_file.get(key, key) for key in files if key in by_file or key in partitions}
