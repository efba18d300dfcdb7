"""Bytes for every image-text pair: from the shard's own WARC when it holds the image,
else downloaded through the guarded fetcher.

Resumable: each download outcome that is final (success or a permanent refusal) is
committed to a cache under the storage root as soon as it arrives, so a re-run, or a
run after a killed one, fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from asagi_dagster.config import DownloaderSettings
from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.web.fetch import Fetcher, FetchResult
from asagi_dagster.web.noai import has_noai

CACHE_DIR = "_cache/downloads"


class DownloadCache:
    """One JSON (the outcome) and, for successes, one body per URL, keyed by its hash.

    ``policy`` is part of the key: an outcome decided under one download policy (size
    cap, allowed networks and types, robots on or off) is not reused under another.
    """

    def __init__(self, storage: Storage, policy: str = ""):
        self.storage = storage
        self.policy = policy

    def _paths(self, url: str) -> tuple[str, str]:
        key = hashlib.sha256(f"{self.policy}|{url}".encode("utf-8")).hexdigest()
        base = self.storage.path(CACHE_DIR, key[:2], key)
        return f"{base}.json", f"{base}.bin"

    def get(self, url: str) -> FetchResult | None:
        meta_path, body_path = self._paths(url)
        if not self.storage.exists(meta_path):
            return None
        meta = self.storage.read_json(meta_path)
        body = None
        if meta["ok"]:
            with self.storage.fs.open(body_path, "rb") as f:
                body = f.read()
        return FetchResult(url=url, ok=meta["ok"], content_type=meta["content_type"], body=body,
                           reason=meta["reason"], detail=meta["detail"])

    def put(self, result: FetchResult) -> None:
        if result.transient:
            return  # worth another try next run
        meta_path, body_path = self._paths(result.url)
        if result.ok:
            self.storage.write_bytes(body_path, result.body)
        # The JSON is written last: it is what makes the entry exist.
        self.storage.write_json(meta_path, {"ok": result.ok, "content_type": result.content_type,
                                            "reason": result.reason, "detail": result.detail})


def download_policy(settings: DownloaderSettings) -> str:
    """The settings that decide an outcome (not timeouts or rates, which only delay it)."""
    fields = ("max_bytes", "max_redirects", "allowed_content_types", "respect_robots_txt", "allow_networks", "user_agent")
    return json.dumps({name: getattr(settings, name) for name in fields}, sort_keys=True)


class WarcImageIndex:
    """Finds a shard's WARC image by URL without loading the images into memory."""

    def __init__(self, storage: Storage, web_images_url: str | None):
        self._handle = self._file = None
        self._where: dict[str, tuple[int, int]] = {}
        if web_images_url is None:
            return
        self._handle = storage.fs.open(storage.strip_protocol(web_images_url), "rb")
        self._file = pq.ParquetFile(self._handle)
        for group in range(self._file.num_row_groups):
            urls = self._file.read_row_group(group, columns=["url"]).column("url").to_pylist()
            for row, url in enumerate(urls):
                self._where.setdefault(url, (group, row))

    def __contains__(self, url: str) -> bool:
        return url in self._where

    def take(self, urls: set[str]) -> dict[str, dict]:
        by_group: dict[int, list[tuple[int, str]]] = {}
        for url in urls:
            group, row = self._where[url]
            by_group.setdefault(group, []).append((row, url))
        found = {}
        for group, wanted in by_group.items():
            table = self._file.read_row_group(group, columns=["content_type", "x_robots_tag", "bytes"])
            for row, url in wanted:
                found[url] = table.slice(row, 1).to_pylist()[0]
            del table
        return found

    def close(self) -> None:
        if self._handle is not None:  # ParquetFile does not close a handle it was given
            self._handle.close()


def gather_pair_images(
    storage: Storage,
    pairs_url: str,
    web_images_url: str | None,
    writer: StageWriter,
    fetcher: Fetcher,
    workers: int,
    batch_rows: int = 64,
) -> dict[str, int]:
    """Write one row per pair with its image bytes, or a rejection; returns origin counts.

    Downloads stream: while one batch is written, the next batches' URLs are already
    being fetched, so the workers never wait for the slowest fetch of a batch or for the
    writes. Each worker looks its URL up in the cache and commits what it fetched there
    itself, in parallel. Batches in flight hold their images, so at most
    ``2 x (batch_rows + workers)`` images of the size cap bound memory (typical pages:
    a few MB in all).
    """
    cache = DownloadCache(storage, policy=download_policy(fetcher.settings))
    origins = {"warc": 0, "cache": 0, "download": 0}
    index = WarcImageIndex(storage, None)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    # Enough batches queued that the workers have about two URLs each to go on with.
    ahead = max(1, math.ceil(2 * workers / batch_rows))
    pending: deque[_Batch] = deque()
    lookups: dict[str, Future] = {}  # URL -> its lookup, while a batch holding it is pending

    def cached_or_fetched(url: str) -> tuple[FetchResult, bool]:
        cached = cache.get(url)
        if cached is not None:
            return cached, False
        result = fetcher.fetch_image(url)
        cache.put(result)
        return result, True

    try:
        index = WarcImageIndex(storage, web_images_url)
        for rows in _batches(storage.iter_rows(storage.strip_protocol(pairs_url), ["pair_id", "image_url"]), batch_rows):
            urls = {row["image_url"] for row in rows}
            batch = _Batch(rows, index.take({u for u in urls if u in index}))
            for url in urls - batch.in_warc.keys():
                if url not in lookups:  # a URL an earlier pending batch asks for too is fetched once
                    lookups[url] = pool.submit(cached_or_fetched, url)
                    batch.own.add(url)
                batch.lookups[url] = lookups[url]
            pending.append(batch)
            while len(pending) > ahead:
                _write_batch(pending.popleft(), writer, origins, lookups)
        while pending:
            _write_batch(pending.popleft(), writer, origins, lookups)
    except BaseException:
        # Stopping: Dagster turns SIGTERM into an exception in this (the main) thread, while
        # the workers sit in fetches. Cancelling ends those within a fraction of a second,
        # so joining the workers below, and at interpreter exit, does not wait on servers.
        fetcher.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        index.close()
    return origins


@dataclass
class _Batch:
    rows: list[dict]
    in_warc: dict[str, dict]  # URL -> its WARC capture
    lookups: dict[str, Future] = field(default_factory=dict)  # URL -> (FetchResult, downloaded now)
    own: set[str] = field(default_factory=set)  # URLs this batch submitted (not an earlier one)


def _write_batch(batch: _Batch, writer: StageWriter, origins: dict[str, int], lookups: dict[str, Future]) -> None:
    for row in batch.rows:
        writer.count_in()
        url = row["image_url"]
        if url in batch.in_warc:
            origins["warc"] += _write_from_warc(row, batch.in_warc[url], writer)
            continue
        result, downloaded = batch.lookups[url].result()
        # A URL an earlier batch fetched counts as a cache hit, as it would after that
        # batch's commit; a cache hit was downloaded by an earlier run.
        origin = "download" if downloaded and url in batch.own else "cache"
        origins[origin] += _write_fetched(row, result, writer)
    for url in batch.own:
        del lookups[url]  # later batches find it in the cache (or fetch a transient failure again)


def _write_from_warc(row: dict, image: dict, writer: StageWriter) -> int:
    if has_noai(image["x_robots_tag"]):
        writer.reject(row["pair_id"], "x_robots_noai", image["x_robots_tag"])
        return 0
    _write(writer, row, "warc", image["content_type"], image["bytes"])
    return 1


def _write_fetched(row: dict, result: FetchResult, writer: StageWriter) -> int:
    if not result.ok:
        writer.reject(row["pair_id"], result.reason, result.detail)
        return 0
    _write(writer, row, "download", result.content_type, result.body)
    return 1


def _write(writer: StageWriter, row: dict, origin: str, content_type: str, body: bytes) -> None:
    writer.write(
        {
            "pair_id": row["pair_id"],
            "image_url": row["image_url"],
            "origin": origin,
            "content_type": content_type,
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "bytes": body,
        },
        size_hint=len(body),
    )


def _batches(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
