"""The WARC inbox: which shards exist, their partition keys, and what a sync should run."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from stat import S_ISREG

from fsspec.implementations.local import LocalFileSystem

from asagi_dagster import catalog
from asagi_dagster.storage import S3Settings, Storage, filesystem_for, url_of

SHARD_SUFFIXES = (".warc", ".warc.gz", ".warc.lz4", ".warc.zst")  # matched case-insensitively: CRAWL.WARC.GZ is a shard too
_KEY_PART = r"[A-Za-z0-9][A-Za-z0-9._\-]*"
_SHARD_PATH = re.compile(rf"(?:{_KEY_PART}/)*{_KEY_PART}")  # used with fullmatch: no trailing newline
_SUBDIR = "__"  # stands for "/" in the keys of shards kept in subfolders
# A key is a folder name under the storage root (<root>/<asset>/<key>/): at most 255 bytes
# on ext4, XFS and APFS. 200 leaves room should a key ever prefix a file name, as in
# "<key>.data.parquet.tmp-<32 hex>" (50 bytes). Keys are ASCII, so characters are bytes.
MAX_KEY_CHARS = 200
_BAD_NAME = "names may use only letters, digits, '.', '_' and '-' (first a letter or digit), and no '__'"


# Dagster looks keys up with one SQL variable per key when it registers them, and
# SQLite's stock build allows 32,766 variables in one statement ("too many SQL
# variables" past it; Debian's build allows more, which hides it): register in batches.
REGISTRATION_BATCH = 10_000


def registration_batches(keys: list[str]) -> list[list[str]]:
    """``keys`` in batches small enough to register in one call on any SQLite."""
    return [keys[i : i + REGISTRATION_BATCH] for i in range(0, len(keys), REGISTRATION_BATCH)]


@dataclass(frozen=True, slots=True)
class ShardFile:
    key: str
    url: str
    fingerprint: str  # size and modification time or ETag: changes when the file does


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    why: str

    def __str__(self) -> str:
        # Control characters in a name (a newline) are shown escaped, so one line stays one.
        shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in self.path)
        return f"{shown}: {self.why}"


@dataclass(frozen=True, slots=True)
class SyncPlan:
    new: list[ShardFile]
    changed: list[ShardFile]
    skipped: list[Skipped]
    resume_after: str = ""  # a windowed plan: where the next window starts ("": from the beginning)


@dataclass(frozen=True, slots=True)
class InboxWindow:
    shards: list[ShardFile]
    skipped: list[Skipped]
    last: str  # the last path (relative) the window covered; "" when it reached the end of the inbox


def is_shard_name(name: str) -> bool:
    """Whether a file is meant as a shard: trailing whitespace ("x.warc\\n") makes it one
    whose name is refused, rather than a file silently passed over."""
    return name.rstrip().lower().endswith(SHARD_SUFFIXES)


def shard_key(rel: str) -> tuple[str | None, str | None]:
    """The partition key of the shard at ``rel`` (relative to the inbox), or why it has none."""
    if _SUBDIR in rel or not _SHARD_PATH.fullmatch(rel):  # one match for the whole path: 90,000 a tick
        return None, _BAD_NAME
    key = rel.replace("/", _SUBDIR)
    if len(key) > MAX_KEY_CHARS:
        return None, (
            f"its partition key would be {len(key)} characters, over the {MAX_KEY_CHARS} allowed (keys are "
            "folder names under the storage root): shorten the name or move it up a folder"
        )
    return key, None


def folder_of(key: str) -> str:
    """The inbox folder of a shard, as its key writes it ("" at the top)."""
    return key.rsplit(_SUBDIR, 1)[0] if _SUBDIR in key else ""


class Inbox:
    def __init__(self, url: str, s3: S3Settings):
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem_for(self.url, s3)
        self.path = self.path.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def scan(self, fingerprints: bool = True) -> tuple[list[ShardFile], list[Skipped]]:
        """Every shard file and every file skipped, with why. Without ``fingerprints`` a
        local scan stats no file (the sensor's steady tick: names are all it compares)
        and each shard's fingerprint is empty."""
        if not self.fs.exists(self.path):
            return [], []
        found, skipped = self._scan_local(fingerprints) if self.is_local else self._scan_remote()
        shards, refused = self._shards(sorted(found, key=lambda f: f[0]))
        return shards, sorted(skipped + refused, key=lambda s: s.path)

    def _shards(self, found: list[tuple[str, str, dict | None]]) -> tuple[list[ShardFile], list[Skipped]]:
        """The found files as shards, and those whose name gives no key, with why."""
        shards, refused = [], []
        for rel, path, info in found:
            key, why = shard_key(rel)
            if key is None:
                assert why is not None  # shard_key says why a name has no key
                refused.append(Skipped(rel, why))
            else:
                shards.append(ShardFile(key, url_of(self.fs, path), _fingerprint(info) if info is not None else ""))
        return shards, refused

    def scan_window(self, after: str, files: int, fingerprints: bool = True) -> InboxWindow:
        """The shards among the next ``files`` inbox files whose path (relative, in listing
        order) sorts after ``after``: a tick lists a bounded share of a large inbox and the
        next one goes on from ``last``. On S3 that is ``files / 1000`` listing pages, however
        many files the inbox holds, whatever they are (other objects count too)."""
        if not self.is_local:
            found, last = self._list_remote(after, files)
            shards, refused = self._shards(found)
            return InboxWindow(shards, refused, last)
        # A local scan is cheap (90,000 files well under a second): it is cut to the window.
        listed, skipped = self._scan_local(fingerprints)
        listed = sorted(f for f in listed if f[0] > after)
        window, last = listed[:files], ""
        if len(listed) > files:
            last = window[-1][0]
        skipped = [s for s in skipped if s.path > after and (not last or s.path <= last)]
        shards, refused = self._shards(window)
        return InboxWindow(shards, sorted(skipped + refused, key=lambda s: s.path), last)

    def _list_remote(self, after: str, files: int) -> tuple[list[tuple[str, str, dict | None]], str]:
        """(the shard files among the next ``files`` objects after ``after``, the last of
        those objects when more follow, else ""), one ListObjectsV2 page of up to 1,000
        keys at a time."""
        bucket, _, prefix = self.path.partition("/")
        prefix = f"{prefix}/" if prefix else ""
        found: list[tuple[str, str, dict | None]] = []
        request = {"Bucket": bucket, "Prefix": prefix, **({"StartAfter": prefix + after} if after else {})}
        listed = 0
        while True:
            page = self.fs.call_s3("list_objects_v2", **request, MaxKeys=min(1000, files - listed))
            for item in page.get("Contents", []):
                listed += 1
                last = item["Key"][len(prefix) :]
                if is_shard_name(item["Key"]):  # the fields s3fs's listing gives, so fingerprints match scan's
                    found.append((last, f"{bucket}/{item['Key']}", {"size": item["Size"], "ETag": item["ETag"]}))
            if not page.get("IsTruncated"):
                return found, ""
            if listed >= files:
                return found, last
            request = {"Bucket": bucket, "Prefix": prefix, "ContinuationToken": page["NextContinuationToken"]}

    def _scan_remote(self) -> tuple[list[tuple[str, str, dict]], list[Skipped]]:
        listing = self.fs.find(self.path, detail=True)  # one listing: sizes and ETags included
        return [(p[len(self.path) + 1 :], p, info) for p, info in listing.items() if is_shard_name(p)], []

    def _scan_local(self, fingerprints: bool) -> tuple[list[tuple[str, str, dict | None]], list[Skipped]]:
        """Shard files under the inbox folder. A link is followed only to a file inside the
        inbox; one that leads out of it, or to no file, is skipped. Linked folders are not
        entered: those inside the inbox are scanned where they are, those outside are skipped.

        One ``scandir`` per folder and one stat per shard file: an inbox of 90,000 files is
        scanned in well under a second (``os.walk`` with list lookups took 38 s)."""
        root = os.path.realpath(self.path)
        found: list[tuple[str, str, dict | None]] = []
        skipped: list[Skipped] = []
        folders = [self.path]
        while folders:
            folder = folders.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError as error:
                skipped.append(Skipped(self._rel(folder), f"folder not readable: {error.strerror}"))
                continue
            for entry in entries:
                if entry.is_symlink():
                    self._take_link(entry, root, found, skipped, fingerprints)
                elif entry.is_dir():
                    folders.append(entry.path)
                elif is_shard_name(entry.name):
                    self._take_file(entry, found, skipped, fingerprints)
        return found, skipped

    def _take_link(self, entry: os.DirEntry, root: str, found: list, skipped: list, fingerprints: bool) -> None:
        target = os.path.realpath(entry.path)
        rel = self._rel(entry.path)
        if not _inside(target, root):
            if os.path.isdir(target) or is_shard_name(entry.name):
                skipped.append(Skipped(rel, f"a symbolic link to {target}, outside the inbox: not followed"))
        elif is_shard_name(entry.name) and not os.path.isdir(target):
            self._take_file(entry, found, skipped, fingerprints)

    def _take_file(self, entry: os.DirEntry, found: list, skipped: list, fingerprints: bool) -> None:
        rel = self._rel(entry.path)
        if not fingerprints:  # the file type from the folder listing: no stat, but for links
            if entry.is_file():
                found.append((rel, entry.path, None))
            else:
                skipped.append(Skipped(rel, "not a regular file (a dangling link, a pipe or a device)"))
            return
        try:
            stat = entry.stat()  # follows a link, as the read will
        except OSError:
            stat = None
        if stat is None or not S_ISREG(stat.st_mode):
            skipped.append(Skipped(rel, "not a regular file (a dangling link, a pipe or a device)"))
        else:
            # The fields fsspec's info() gives, so fingerprints match Inbox.fingerprint's.
            found.append((rel, entry.path, {"size": stat.st_size, "mtime": stat.st_mtime}))

    def _rel(self, path: str) -> str:
        if path.startswith(self.path + os.sep):  # what scandir yields: cheaper than relpath
            return path[len(self.path) + 1 :].replace(os.sep, "/")
        return os.path.relpath(path, self.path).replace(os.sep, "/")

    def _shard_path(self, key: str) -> str:
        path = f"{self.path}/{key.replace(_SUBDIR, '/')}"
        # The file may have become a link out of the inbox since the scan: never read through it.
        if self.is_local and not _inside(os.path.realpath(path), os.path.realpath(self.path)):
            raise ValueError(f"inbox shard {key} is a link to {os.path.realpath(path)}, outside the inbox: not read")
        return path

    def url_for(self, key: str) -> str:
        return f"{self.url}/{key.replace(_SUBDIR, '/')}"

    def open(self, key: str):
        return self.fs.open(self._shard_path(key), "rb")

    def fingerprint(self, key: str) -> str:
        return _fingerprint(self.fs.info(self._shard_path(key)))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _fingerprint(info: dict) -> str:
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{stamp}"


def plan_sync(
    inbox: Inbox,
    registered: Callable[[list[str]], set[str]],
    storage: Storage,
    source_asset: str | None = None,
    final_asset: str | None = None,
    window: tuple[str, int] | None = None,
) -> SyncPlan:
    """New shards; with ``source_asset`` and ``final_asset`` also the registered shards
    out of sync: whose file changed since ``source_asset`` recorded its fingerprint, or
    that never reached ``final_asset`` (a failed or unfinished ingest). ``registered``:
    which of the scanned shard keys are registered (web/batches.py). With ``window``
    (after, files), only that window of the inbox (``Inbox.scan_window``)."""
    resync = bool(source_asset and final_asset)
    resume_after = ""
    if window is None:
        shards, skipped = inbox.scan(fingerprints=resync)
    else:
        part = inbox.scan_window(*window, fingerprints=resync)
        shards, skipped, resume_after = part.shards, part.skipped, part.last
    known = registered([s.key for s in shards])
    new = [s for s in shards if s.key not in known]
    changed = []
    if resync:
        assert source_asset is not None and final_asset is not None
        ingested = _ingested(storage, source_asset, final_asset)  # one catalog read per plan
        changed = [s for s in shards if s.key in known and _out_of_sync(ingested, s)]
    return SyncPlan(new=new, changed=changed, skipped=skipped, resume_after=resume_after)


@dataclass(frozen=True, slots=True)
class Ingested:
    fingerprints: dict[str, str | None]  # shard key -> the fingerprint source_asset recorded
    finished: set[str]  # shard keys that reached final_asset


def _ingested(storage: Storage, source_asset: str, final_asset: str) -> Ingested:
    table = catalog.read_latest(storage, ["source"], [source_asset, final_asset])
    fingerprints, finished = {}, set()
    for asset, key, source in zip(*(table.column(c).to_pylist() for c in ("asset", "partition", "source"))):
        if asset == source_asset:
            fingerprints[key] = dict(source or []).get("fingerprint")
        if asset == final_asset:
            finished.add(key)
    return Ingested(fingerprints, finished)


def _out_of_sync(ingested: Ingested, shard: ShardFile) -> bool:
    if shard.key not in ingested.finished or shard.key not in ingested.fingerprints:
        return True
    return ingested.fingerprints[shard.key] != shard.fingerprint
