"""The WARC inbox: which shards exist, their partition keys, and what a sync should run."""

from __future__ import annotations

import re
from dataclasses import dataclass

from asagi_dagster.config import S3Settings
from asagi_dagster.storage import Storage, filesystem_for, url_of

SHARD_SUFFIXES = (".warc", ".warc.gz")
_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_SUBDIR = "__"  # stands for "/" in the keys of shards kept in subfolders


@dataclass(frozen=True, slots=True)
class ShardFile:
    key: str
    url: str
    fingerprint: str  # size and modification time or ETag: changes when the file does


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    why: str


@dataclass(frozen=True, slots=True)
class SyncPlan:
    new: list[ShardFile]
    changed: list[ShardFile]
    skipped: list[Skipped]


class Inbox:
    def __init__(self, url: str, s3: S3Settings):
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem_for(self.url, s3)
        self.path = self.path.rstrip("/")

    def scan(self) -> tuple[list[ShardFile], list[Skipped]]:
        if not self.fs.exists(self.path):
            return [], []
        shards, skipped = [], []
        for path, info in sorted(self.fs.find(self.path, detail=True).items()):
            if not path.endswith(SHARD_SUFFIXES):
                continue
            rel = path[len(self.path) + 1 :]
            parts = rel.split("/")
            if any(_SUBDIR in p or not _KEY_OK.match(p) for p in parts):
                skipped.append(Skipped(rel, "names may use only letters, digits, '.', '_' and '-', and no '__'"))
                continue
            shards.append(ShardFile(_SUBDIR.join(parts), url_of(self.fs, path), _fingerprint(info)))
        return shards, skipped

    def url_for(self, key: str) -> str:
        return f"{self.url}/{key.replace(_SUBDIR, '/')}"

    def open(self, key: str):
        return self.fs.open(f"{self.path}/{key.replace(_SUBDIR, '/')}", "rb")

    def fingerprint(self, key: str) -> str:
        return _fingerprint(self.fs.info(f"{self.path}/{key.replace(_SUBDIR, '/')}"))

def _fingerprint(info: dict) -> str:
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{stamp}"


def plan_sync(
    inbox: Inbox,
    registered: set[str],
    storage: Storage,
    source_asset: str | None = None,
    final_asset: str | None = None,
) -> SyncPlan:
    """New shards; with ``source_asset`` and ``final_asset`` also the registered shards
    out of sync: whose file changed since ``source_asset`` recorded its fingerprint, or
    that never reached ``final_asset`` (a failed or unfinished ingest)."""
    shards, skipped = inbox.scan()
    new = [s for s in shards if s.key not in registered]
    changed = []
    if source_asset and final_asset:
        for shard in shards:
            if shard.key in registered and _out_of_sync(storage, shard, source_asset, final_asset):
                changed.append(shard)
    return SyncPlan(new=new, changed=changed, skipped=skipped)


def _out_of_sync(storage: Storage, shard: ShardFile, source_asset: str, final_asset: str) -> bool:
    if not storage.exists(storage.manifest_path(final_asset, shard.key)):
        return True
    if not storage.exists(storage.manifest_path(source_asset, shard.key)):
        return True
    return storage.read_manifest(source_asset, shard.key).source.get("fingerprint") != shard.fingerprint
