"""Bytes for every image-text pair: from the shard's own WARC when it holds the image,
else downloaded through the guarded fetcher.

Resumable: each download outcome that is final (success or a permanent refusal) is
committed to a cache under the storage root as soon as it arrives, so a re-run, or a
run after a killed one, fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue

import pyarrow.parquet as pq

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.web.fetch import Fetcher, FetchResult
from asagi_dagster.web.frontier import HostFrontier
from asagi_dagster.web.noai import has_noai
from asagi_dagster.web.settings import DownloaderSettings

CACHE_DIR = "_cache/downloads"
_WAKE_S = 0.25  # the longest the gathering loop waits without looking at the clock


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
        return FetchResult(url=url, ok=meta["ok"], content_type=meta["content_type"], body=body, reason=meta["reason"], detail=meta["detail"])

    def put(self, result: FetchResult) -> None:
        if result.transient:
            return  # worth another try next run
        meta_path, body_path = self._paths(result.url)
        if result.ok:
            assert result.body is not None  # an ok result has its body
            self.storage.write_bytes(body_path, result.body)
        # The JSON is written last: it is what makes the entry exist.
        self.storage.write_json(meta_path, {"ok": result.ok, "content_type": result.content_type, "reason": result.reason, "detail": result.detail})


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
            assert self._file is not None  # a url is found only in a file that was read
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
    read_ahead: int | None = None,
) -> dict[str, int]:
    """Write one row per pair with its image bytes, or a rejection; returns origin counts.

    Rows are read ``read_ahead`` distinct URLs ahead (default: 32 per worker, at least
    1,024). Each URL is looked up in the cache, in parallel; the misses go to a frontier
    that hands the workers the URL whose host may be asked soonest (``HostFrontier``),
    so the per-host interval holds one host back, not the whole shard. Rows are written
    as their image arrives, and the image is committed to the cache beside, so a worker
    goes on to its next fetch at once. Image bytes are held by the fetches in flight
    (1.5 x ``workers``), the commits in flight (up to 2.5 x ``workers``: a fetch that
    finishes is committed even when ``workers`` commits are under way), a WARC batch of
    ``batch_rows`` rows, and cache hits that wait to be written, which on a re-run of a
    cached shard can be as many as ``read_ahead``: about 4 x ``workers`` x the size cap
    at worst while downloading (typical images: a few MB in all).
    """
    read_ahead = read_ahead or max(1024, 32 * workers)  # URLs only: a few hundred KB of rows
    index = WarcImageIndex(storage, None)
    run = _Gathering(storage, writer, fetcher, workers)
    try:
        index = WarcImageIndex(storage, web_images_url)
        rows = _batches(storage.iter_rows(storage.strip_protocol(pairs_url), ["pair_id", "image_url"]), batch_rows)
        batches = enumerate(rows)
        exhausted = False
        while True:
            while not exhausted and len(run.waiting) < read_ahead:
                number, batch = next(batches, (None, None))
                exhausted = batch is None
                if not exhausted:
                    assert number is not None and batch is not None
                    run.read(number, batch, index)
            if not run.step() and exhausted:
                break
    except BaseException:
        # Stopping: Dagster turns SIGTERM into an exception in this (the main) thread, while
        # the workers sit in fetches. Cancelling ends those within a fraction of a second,
        # so joining the workers below, and at interpreter exit, does not wait on servers.
        fetcher.cancel()
        raise
    finally:
        run.close()
        index.close()
    return run.origins


class _Gathering:
    """One run's lookups, fetches and cache commits in flight, and the rows that wait on them."""

    def __init__(self, storage: Storage, writer: StageWriter, fetcher: Fetcher, workers: int):
        self.writer, self.fetcher, self.workers = writer, fetcher, workers
        self.cache = DownloadCache(storage, policy=download_policy(fetcher.settings))
        self.origins = {"warc": 0, "cache": 0, "download": 0}
        first_requests = 2 if fetcher.settings.respect_robots_txt else 1  # robots.txt, then the image
        self.frontier = HostFrontier(fetcher.throttle.interval, fetcher.throttle.connections, first_requests)
        self.waiting: dict[str, _Waiting] = {}  # URL -> the rows that need it
        self.looking: dict[Future, str] = {}  # cache lookups in flight
        self.fetching: dict[Future, str] = {}  # downloads in flight
        self.storing: dict[Future, str] = {}  # cache commits in flight
        # Fetched, their commit still in flight: a row that asks for one again now would
        # miss the cache and fetch it a second time (a second request to its host).
        self.committing: dict[str, FetchResult] = {}
        # Finished futures arrive here: waiting on a queue costs the same however many are
        # in flight (concurrent.futures.wait sets up a waiter on each of them every call).
        self.finished: SimpleQueue[Future] = SimpleQueue()
        self.cache_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache")
        self.fetch_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
        # A few fetches queued beyond the workers: one that finishes starts the next at once,
        # not after this thread has woken up and chosen it (up to a GIL switch interval later).
        self.most_fetching = workers + max(1, workers // 2)

    def read(self, number: int, rows: list[dict], index: WarcImageIndex) -> None:
        """Write the batch's rows the WARC holds; look the others' URLs up, once each."""
        urls = {row["image_url"] for row in rows}
        in_warc = index.take({u for u in urls if u in index})
        for row in rows:
            url = row["image_url"]
            if url in in_warc:
                self.writer.count_in()
                self.origins["warc"] += _write_from_warc(row, in_warc[url], self.writer)
            elif url in self.waiting:
                self.waiting[url].rows.append((row, number))
            elif url in self.committing:
                _write_rows(_Waiting(first_batch=-1, rows=[(row, number)]), self.committing[url], False, self.writer, self.origins)
            else:
                self.waiting[url] = _Waiting(first_batch=number, rows=[(row, number)])
                self.looking[self._submit(self.cache_pool, self.cache.get, url)] = url

    def step(self) -> bool:
        """Start the fetches whose host's turn has come, then settle what finishes first.
        False when nothing is left in flight or queued."""
        wake_at = None
        # Commits slower than fetches (a far object store) hold the fetches back, so the
        # bodies waiting to be committed stay bounded.
        while len(self.fetching) < self.most_fetching and len(self.storing) < self.workers and len(self.frontier):
            url = self.frontier.take()
            if url is None:  # no host's turn yet: come back when one's comes
                wake_at = self.frontier.wake_at
                break
            self.fetching[self._submit(self.fetch_pool, self.fetcher.fetch_image, url)] = url
        timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
        if not (self.looking or self.fetching or self.storing):
            if timeout is None:
                return len(self.frontier) > 0
            time.sleep(timeout)  # the host's interval itself: nothing else to wait for
            return True
        try:
            # In slices, so that a signal's exception is raised here promptly.
            self._settle(self.finished.get(timeout=min(_WAKE_S, _WAKE_S if timeout is None else timeout)))
            while True:
                self._settle(self.finished.get_nowait())
        except Empty:
            return True

    def _submit(self, pool: ThreadPoolExecutor, work, item) -> Future:
        future = pool.submit(work, item)
        future.add_done_callback(self.finished.put)
        return future

    def _settle(self, future: Future) -> None:
        if future in self.storing:
            self.committing.pop(self.storing.pop(future), None)
            future.result()  # a failed commit fails the run, as a failed write would
        elif future in self.looking:
            url = self.looking.pop(future)
            cached = future.result()
            if cached is None:
                self.frontier.add(url)
            else:  # downloaded by an earlier run
                _write_rows(self.waiting.pop(url), cached, False, self.writer, self.origins)
        else:
            url = self.fetching.pop(future)
            self.frontier.done(url)
            result = future.result()
            self.storing[self._submit(self.cache_pool, self.cache.put, result)] = url
            if not result.transient:  # what the cache will hold; a transient one is tried again
                self.committing[url] = result
            _write_rows(self.waiting.pop(url), result, True, self.writer, self.origins)

    def close(self) -> None:
        self.fetch_pool.shutdown(wait=True, cancel_futures=True)
        self.cache_pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Waiting:
    first_batch: int
    rows: list[tuple[dict, int]]  # (row, the batch it was read in)


def _write_rows(waiting: _Waiting, result: FetchResult, downloaded: bool, writer: StageWriter, origins: dict[str, int]) -> None:
    for row, batch in waiting.rows:
        writer.count_in()
        # Rows of a later batch than the one that asked first count as cache hits, as they
        # would had that batch been committed before they were read.
        origin = "download" if downloaded and batch == waiting.first_batch else "cache"
        origins[origin] += _write_fetched(row, result, writer)


def _write_from_warc(row: dict, image: dict, writer: StageWriter) -> int:
    if has_noai(image["x_robots_tag"]):
        writer.reject(row["pair_id"], "x_robots_noai", image["x_robots_tag"])
        return 0
    _write(writer, row, "warc", image["content_type"], image["bytes"])
    return 1


def _write_fetched(row: dict, result: FetchResult, writer: StageWriter) -> int:
    if not result.ok:
        assert result.reason is not None  # a refusal has its reason
        writer.reject(row["pair_id"], result.reason, result.detail)
        return 0
    assert result.content_type is not None and result.body is not None  # an ok result has both
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
