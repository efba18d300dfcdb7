"""gather_pair_images end to end: real Parquet partitions, a real loopback HTTP server,
the real Fetcher and the download cache under the storage root."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest

from asagi_dagster.storage import StageWriter
from asagi_dagster.web import schemas
from asagi_dagster.web.fetch import Fetcher, FetchResult, refused
from asagi_dagster.web.pair_images import CACHE_DIR, DownloadCache, download_policy, gather_pair_images
from tests.web.test_fetch import JPEG, PNG, LoopbackServer, image, sequence, settings, status, text

SHARD = "shard-a"
WARC_BYTES = b"\xff\xd8warc-captured-image\xff\xd9"
WARC_NOAI_BYTES = b"\xff\xd8warc-noai-image\xff\xd9"
SERVED_A = JPEG
SERVED_SHARED = PNG
SERVED_FLAKY = b"GIF89a" + b"\x01" * 100


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def pair_row(pair_id: str, image_url: str | None, index: int = 0) -> dict:
    return {
        "pair_id": pair_id,
        "doc_id": "doc-1",
        "shard": SHARD,
        "page_url": "http://127.0.0.1/page.html",
        "page_title": "A page",
        "image_index": index,
        "image_url": image_url,
        "alt": f"alt {pair_id}",
        "title": None,
        "figcaption": None,
        "text_before": "before",
        "text_after": "after",
    }


def web_image_row(record_id: str, url: str, body: bytes, content_type: str, x_robots_tag: str | None) -> dict:
    return {
        "record_id": record_id,
        "shard": SHARD,
        "offset": 0,
        "url": url,
        "fetch_time": "2024-01-01T00:00:00Z",
        "content_type": content_type,
        "x_robots_tag": x_robots_tag,
        "payload_digest": "sha1:" + hashlib.sha1(body).hexdigest(),
        "size": len(body),
        "bytes": body,
    }


def write_pairs(storage, rows: list[dict]):
    with StageWriter(storage, "image_text_pairs", SHARD, schemas.IMAGE_TEXT_PAIRS, schemas.IMAGE_TEXT_PAIRS_VERSION) as w:
        for row in rows:
            w.count_in()
            w.write(row)
    return w.manifest


def write_web_images(storage, rows: list[dict]):
    with StageWriter(storage, "web_images", SHARD, schemas.WEB_IMAGES, schemas.WEB_IMAGES_VERSION) as w:
        for row in rows:
            w.count_in()
            w.write(row, size_hint=row["size"])
    return w.manifest


def run_gather(storage, pairs_url, images_url, fetch_settings, workers: int = 4):
    with (
        StageWriter(storage, "pair_images", SHARD, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(fetch_settings) as fetcher,
    ):
        origins = gather_pair_images(storage, pairs_url, images_url, out, fetcher, workers)
    return origins, out.manifest


def data_rows(storage, manifest) -> dict[str, dict]:
    rows = list(storage.iter_rows(storage.strip_protocol(manifest.data_url)))
    by_id = {row["pair_id"]: row for row in rows}
    assert len(by_id) == len(rows), "one row per pair"
    return by_id


def rejection_rows(storage, manifest) -> dict[str, dict]:
    rows = list(storage.iter_rows(storage.strip_protocol(manifest.rejections_url)))
    by_id = {row["record_id"]: row for row in rows}
    assert len(by_id) == len(rows), "one rejection per pair"
    return by_id


def parquet_count(storage, url: str) -> int:
    with storage.fs.open(storage.strip_protocol(url), "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def assert_accounted(storage, manifest) -> None:
    assert manifest.rows_in == manifest.rows_out + manifest.rows_rejected
    assert parquet_count(storage, manifest.data_url) == manifest.rows_out
    assert parquet_count(storage, manifest.rejections_url) == manifest.rows_rejected


@pytest.fixture
def shard(storage, server):
    """A pairs partition and a web_images partition, with the server's routes for the downloads."""
    url = server.url
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /private/\n")
    server.routes["/a.jpg"] = image(SERVED_A, "image/jpeg")
    server.routes["/shared.png"] = image(SERVED_SHARED, "image/png")
    server.routes["/flaky.gif"] = sequence(status(503), image(SERVED_FLAKY, "image/gif"))
    server.routes["/private/p.jpg"] = image()
    server.routes["/page.jpg"] = text("<html></html>", "text/html")
    # Served too, with other bytes: if the WARC images were fetched, the sha256 would differ.
    server.routes["/warc/cat.jpg"] = image(b"served-not-warc", "image/jpeg")
    server.routes["/warc/noai.jpg"] = image(b"served-not-warc", "image/jpeg")
    pairs = [
        pair_row("p-warc", url("/warc/cat.jpg"), 0),
        pair_row("p-warc-noai", url("/warc/noai.jpg"), 1),
        pair_row("p-a", url("/a.jpg"), 2),
        pair_row("p-shared-1", url("/shared.png"), 3),
        pair_row("p-shared-2", url("/shared.png"), 4),
        pair_row("p-404", url("/missing.jpg"), 5),
        pair_row("p-flaky", url("/flaky.gif"), 6),
        pair_row("p-robots", url("/private/p.jpg"), 7),
        pair_row("p-html", url("/page.jpg"), 8),
    ]
    images = [
        web_image_row("rec-cat", url("/warc/cat.jpg"), WARC_BYTES, "image/jpeg", None),
        web_image_row("rec-noai", url("/warc/noai.jpg"), WARC_NOAI_BYTES, "image/jpeg", "noai"),
        web_image_row("rec-unused", url("/warc/other.jpg"), b"unused", "image/jpeg", None),
    ]
    return write_pairs(storage, pairs), write_web_images(storage, images)


def image_requests(srv: LoopbackServer) -> list[str]:
    return [p for p in srv.paths() if p != "/robots.txt"]


def test_gather_pair_images_end_to_end_and_resume(storage, server, shard):
    pairs, web_images = shard
    fast = settings(retries=0, per_host_interval_s=0.0)

    # --- first run ---------------------------------------------------------------------
    origins, manifest = run_gather(storage, pairs.data_url, web_images.data_url, fast)
    assert origins == {"warc": 1, "cache": 0, "download": 3}
    assert manifest.asset == "pair_images" and manifest.partition == SHARD
    assert manifest.rows_in == 9
    assert manifest.rows_out == 4
    assert manifest.rows_rejected == 5
    assert manifest.rejected_by_reason == {
        "bad_content_type": 1,
        "http_status": 2,
        "robots_disallowed": 1,
        "x_robots_noai": 1,
    }
    assert_accounted(storage, manifest)

    rows = data_rows(storage, manifest)
    assert set(rows) == {"p-warc", "p-a", "p-shared-1", "p-shared-2"}
    warc = rows["p-warc"]
    assert warc["origin"] == "warc"
    assert warc["bytes"] == WARC_BYTES
    assert warc["sha256"] == sha(WARC_BYTES)
    assert warc["size"] == len(WARC_BYTES)
    assert warc["content_type"] == "image/jpeg"
    assert warc["image_url"] == server.url("/warc/cat.jpg")
    for pair_id, body, ctype in [("p-a", SERVED_A, "image/jpeg"), ("p-shared-1", SERVED_SHARED, "image/png"), ("p-shared-2", SERVED_SHARED, "image/png")]:
        row = rows[pair_id]
        assert row["origin"] == "download", pair_id
        assert row["bytes"] == body
        assert row["sha256"] == sha(body)
        assert row["size"] == len(body)
        assert row["content_type"] == ctype

    rejected = rejection_rows(storage, manifest)
    assert {k: v["reason"] for k, v in rejected.items()} == {
        "p-warc-noai": "x_robots_noai",
        "p-404": "http_status",
        "p-flaky": "http_status",
        "p-robots": "robots_disallowed",
        "p-html": "bad_content_type",
    }
    assert rejected["p-warc-noai"]["detail"] == "noai"
    assert rejected["p-404"]["detail"] == "404"
    assert rejected["p-flaky"]["detail"] == "503"
    assert rejected["p-html"]["detail"] == "text/html"

    first_requests = image_requests(server)
    assert sorted(first_requests) == sorted(["/a.jpg", "/shared.png", "/missing.jpg", "/flaky.gif", "/page.jpg"])
    assert not [p for p in first_requests if p.startswith("/warc/")]  # WARC images: no HTTP at all
    assert first_requests.count("/shared.png") == 1  # two pairs, one URL, one request
    assert server.count("/robots.txt") == 1

    # --- second run: a new writer for the same partition, a new fetcher (a new Dagster run) --
    before = len(server.requests)
    origins2, manifest2 = run_gather(storage, pairs.data_url, web_images.data_url, fast)
    new = image_requests_since(server, before)
    assert new == ["/flaky.gif"]  # only the transient failure is tried again
    assert origins2 == {"warc": 1, "cache": 3, "download": 1}
    assert manifest2.rows_in == 9
    assert manifest2.rows_out == 5
    assert manifest2.rows_rejected == 4
    assert manifest2.rejected_by_reason == {"bad_content_type": 1, "http_status": 1, "robots_disallowed": 1, "x_robots_noai": 1}
    assert_accounted(storage, manifest2)
    assert manifest2.data_url == manifest.data_url  # the same files, replaced
    assert manifest2.rejections_url == manifest.rejections_url

    rows2 = data_rows(storage, manifest2)
    assert set(rows2) == {"p-warc", "p-a", "p-shared-1", "p-shared-2", "p-flaky"}
    assert rows2["p-flaky"]["origin"] == "download"
    assert rows2["p-flaky"]["bytes"] == SERVED_FLAKY
    assert rows2["p-flaky"]["sha256"] == sha(SERVED_FLAKY)
    assert rows2["p-flaky"]["content_type"] == "image/gif"
    for pair_id, body in [("p-a", SERVED_A), ("p-shared-1", SERVED_SHARED), ("p-shared-2", SERVED_SHARED)]:
        assert rows2[pair_id]["bytes"] == body  # from the cache, the same bytes
        assert rows2[pair_id]["sha256"] == sha(body)
    assert rows2["p-warc"]["bytes"] == WARC_BYTES
    rejected2 = rejection_rows(storage, manifest2)
    assert {k: v["reason"] for k, v in rejected2.items()} == {
        "p-warc-noai": "x_robots_noai",
        "p-404": "http_status",
        "p-robots": "robots_disallowed",
        "p-html": "bad_content_type",
    }
    assert rejected2["p-404"]["detail"] == "404"  # the cached refusal keeps its detail

    # --- third run: everything final, no image request at all --------------------------
    before = len(server.requests)
    origins3, manifest3 = run_gather(storage, pairs.data_url, web_images.data_url, fast)
    assert image_requests_since(server, before) == []
    assert origins3 == {"warc": 1, "cache": 4, "download": 0}
    assert (manifest3.rows_out, manifest3.rows_rejected) == (5, 4)
    assert_accounted(storage, manifest3)
    # no stray temporary files next to the committed ones
    leftovers = [p for p in storage.fs.find(storage.root_path) if ".tmp-" in p]
    assert leftovers == []


def image_requests_since(srv: LoopbackServer, index: int) -> list[str]:
    return [p for p, _, _ in srv.requests[index:] if p != "/robots.txt"]


def test_without_web_images_everything_is_downloaded(storage, server):
    server.routes["/x.jpg"] = image(SERVED_A, "image/jpeg")
    pairs = write_pairs(storage, [pair_row("p-1", server.url("/x.jpg")), pair_row("p-2", server.url("/x.jpg"), 1)])
    origins, manifest = run_gather(storage, pairs.data_url, None, settings())
    assert origins == {"warc": 0, "cache": 0, "download": 2}
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_rejected) == (2, 2, 0)
    assert server.count("/x.jpg") == 1
    assert {row["sha256"] for row in data_rows(storage, manifest).values()} == {sha(SERVED_A)}


def test_many_pairs_across_batches_and_workers(storage, server):
    """More pairs than one batch: every pair accounted, each URL fetched once."""
    for i in range(20):
        server.routes[f"/img/{i}.jpg"] = image(f"img-{i}".encode(), "image/jpeg")
    rows = [pair_row(f"p-{n}", server.url(f"/img/{n % 20}.jpg"), n) for n in range(50)]
    pairs = write_pairs(storage, rows)
    with (
        StageWriter(storage, "pair_images", SHARD, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(settings()) as fetcher,
    ):
        origins = gather_pair_images(storage, pairs.data_url, None, out, fetcher, workers=4, batch_rows=16)
    manifest = out.manifest
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_rejected) == (50, 50, 0)
    assert_accounted(storage, manifest)
    assert sorted(image_requests(server)) == sorted(f"/img/{i}.jpg" for i in range(20))
    # URLs seen in an earlier batch come from the cache in later ones
    assert origins["download"] + origins["cache"] == 50
    assert origins["cache"] > 0
    got = data_rows(storage, manifest)
    for n in range(50):
        assert got[f"p-{n}"]["bytes"] == f"img-{n % 20}".encode()


def test_a_url_asked_again_while_its_commit_is_in_flight_is_not_fetched_again(storage, server, monkeypatch):
    """Its fetch has settled but the cache does not hold it yet: the repeat takes the
    fetched result rather than missing the cache and asking the host a second time."""
    import threading

    server.routes["/x.jpg"] = image(SERVED_A, "image/jpeg")
    for i in range(3):
        server.routes[f"/filler/{i}.jpg"] = image(f"filler-{i}".encode(), "image/jpeg")
    looked_up_again = threading.Event()
    lookups = []
    get, put = DownloadCache.get, DownloadCache.put

    def counting_get(self, url):
        lookups.append(url)
        if lookups.count(url) > 1:
            looked_up_again.set()
        return get(self, url)

    def held_put(self, result):
        if result.url.endswith("/x.jpg"):  # the commit waits until the repeat has been read
            looked_up_again.wait(timeout=3)
        return put(self, result)

    monkeypatch.setattr(DownloadCache, "get", counting_get)
    monkeypatch.setattr(DownloadCache, "put", held_put)
    rows = [pair_row("p-0", server.url("/x.jpg"))]
    rows += [pair_row(f"f-{i}", server.url(f"/filler/{i}.jpg"), i + 1) for i in range(3)]
    rows += [pair_row("p-1", server.url("/x.jpg"), 4)]
    pairs = write_pairs(storage, rows)
    with (
        StageWriter(storage, "pair_images", SHARD, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(settings()) as fetcher,
    ):  # one row read at a time: the repeat is read after the first fetch has settled
        origins = gather_pair_images(storage, pairs.data_url, None, out, fetcher, workers=2, batch_rows=1, read_ahead=1)
    assert server.count("/x.jpg") == 1
    assert origins == {"warc": 0, "cache": 1, "download": 4}
    assert_accounted(storage, out.manifest)
    assert data_rows(storage, out.manifest)["p-1"]["bytes"] == SERVED_A


def test_a_failed_run_commits_nothing(storage, server):
    """A run whose writer body raises leaves the previous committed output in place."""
    server.routes["/x.jpg"] = image(SERVED_A, "image/jpeg")
    pairs = write_pairs(storage, [pair_row("p-1", server.url("/x.jpg"))])
    _, manifest = run_gather(storage, pairs.data_url, None, settings())
    with pytest.raises(FileNotFoundError):
        with (
            StageWriter(storage, "pair_images", SHARD, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
            Fetcher(settings()) as fetcher,
        ):
            gather_pair_images(storage, pairs.data_url + ".nope", None, out, fetcher, 2)
    assert parquet_count(storage, manifest.data_url) == 1
    with pytest.raises(RuntimeError, match="no manifest"):
        out.manifest


def test_one_malformed_host_does_not_abort_the_partition(storage, server):
    server.routes["/x.jpg"] = image(SERVED_A, "image/jpeg")
    pairs = write_pairs(storage, [pair_row("p-ok", server.url("/x.jpg")), pair_row("p-bad", "http://a..b/x.jpg", 1)])
    origins, manifest = run_gather(storage, pairs.data_url, None, settings())
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_rejected) == (2, 1, 1)
    assert origins == {"warc": 0, "cache": 0, "download": 1}  # rows written, by origin
    assert_accounted(storage, manifest)
    assert data_rows(storage, manifest)["p-ok"]["bytes"] == SERVED_A
    assert rejection_rows(storage, manifest)["p-bad"]["reason"] == "invalid_url"
    # a permanent refusal: cached, so the next run does not try it again
    assert DownloadCache(storage, download_policy(settings())).get("http://a..b/x.jpg").reason == "invalid_url"
    # ...but only under the same policy: a changed size cap or allow-list decides anew.
    assert DownloadCache(storage, download_policy(settings(max_bytes=1))).get("http://a..b/x.jpg") is None


# --------------------------------------------------------------------------------------
# DownloadCache
# --------------------------------------------------------------------------------------


def test_download_cache_round_trip(storage):
    cache = DownloadCache(storage)
    url = "http://127.0.0.1:9/a.jpg"
    assert cache.get(url) is None
    cache.put(FetchResult(url=url, ok=True, content_type="image/jpeg", body=JPEG))
    got = cache.get(url)
    assert got == FetchResult(url=url, ok=True, content_type="image/jpeg", body=JPEG)
    # stored under the storage root's cache folder
    assert storage.fs.find(storage.path(CACHE_DIR))


def test_download_cache_keeps_permanent_refusals(storage):
    cache = DownloadCache(storage)
    url = "http://127.0.0.1:9/missing.jpg"
    cache.put(refused(url, "http_status", "404"))
    got = cache.get(url)
    assert got.ok is False
    assert (got.reason, got.detail, got.body, got.transient) == ("http_status", "404", None, False)
    assert cache.get("http://127.0.0.1:9/other.jpg") is None  # keyed by URL


def test_download_cache_skips_transient_results(storage):
    cache = DownloadCache(storage)
    url = "http://127.0.0.1:9/flaky.jpg"
    cache.put(refused(url, "timeout", "ReadTimeout", transient=True))
    assert cache.get(url) is None
    assert not storage.exists(storage.path(CACHE_DIR))


def test_download_cache_is_shared_by_instances(storage):
    url = "http://127.0.0.1:9/b.png"
    DownloadCache(storage).put(FetchResult(url=url, ok=True, content_type="image/png", body=PNG))
    assert DownloadCache(storage).get(url).body == PNG
