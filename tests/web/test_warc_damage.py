"""Damage never drops records silently: after any damage, reading resumes at the next
record start, the damaged span is one ``corrupt_warc`` rejection naming its bytes, and
the records in the files equal the record starts an independent scan of the raw file
saw outside rejected spans (``record_starts_check``).

Member offsets here are found with Python's zlib, not with the code under test."""

from __future__ import annotations

import gzip
import io
import random
import re
import zlib

import brotli
import pytest
from fastwarc import Lz4Writer, ZstdWriter

from asagi_dagster.query import connect, record_starts_check
from asagi_dagster.web.warc import CorruptRegion, iter_warc
from asagi_dagster.web.warc_starts import scan_record_starts
from asagi_sample.warcs import ShardWriter
from tests.web.corpus import GOOD_AFTER, GOOD_BEFORE, good_page, gz, raw_response, shard_around
from tests.web.test_ingest import doc_urls, reasons, rejections, rows, run_ingest


def crawl(pages: int = 30, gzip_records: bool = True) -> tuple[bytes, list[str]]:
    """A shard of pages, each with a request record, and a photo every third page (photo
    bytes are stored, not deflated, inside their gzip member); returns it and the URLs
    of its responses in order."""
    rng = random.Random(7)
    shard = ShardWriter("crawl.warc.gz", gzip=gzip_records)
    urls = []
    for i in range(pages):
        url = f"https://crawl.example.jp/page{i}.html"
        shard.fetch(url, good_page(f"ページ{i}", image=f"https://crawl.example.jp/p{i}.jpg"), "text/html; charset=utf-8")
        urls.append(url)
        if i % 3 == 0:
            photo = b"\xff\xd8\xff\xe0" + rng.randbytes(3000) + b"\xff\xd9"
            shard.fetch(f"https://crawl.example.jp/p{i}.jpg", photo, "image/jpeg")
            urls.append(f"https://crawl.example.jp/p{i}.jpg")
    return shard.getvalue(), urls


def members(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each gzip member, by zlib."""
    spans, start = [], 0
    while start < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[start:])
        end = len(data) - len(inflater.unused_data)
        spans.append((start, end))
        start = end
    return spans


def member_url(data: bytes, span: tuple[int, int]) -> tuple[str, str]:
    text = gzip.decompress(data[span[0] : span[1]])
    kind = re.search(rb"WARC-Type: (\w+)", text).group(1).decode()
    url = re.search(rb"WARC-Target-URI: (\S+)", text)
    return kind, url.group(1).decode() if url else ""


def accounted_urls(storage, manifests) -> set[str]:
    """Response URLs that ended as a row of web_documents or web_images."""
    return doc_urls(storage, manifests) | {r["url"] for r in rows(storage, manifests["web_images"])}


def starts_check(storage, manifests) -> dict:
    with connect(storage) as con:
        return record_starts_check(con, manifests["web_documents"], manifests["web_images"])


def ingest(storage, config, tmp_path, name: str, data: bytes) -> tuple[dict, dict]:
    manifests = run_ingest(storage, config, tmp_path, name, data)
    check = starts_check(storage, manifests)
    assert check["passed"], check
    return manifests, check


def spans(storage, manifests) -> list[tuple[int, int]]:
    found = []
    for row in rejections(storage, manifests["web_documents"]):
        if row["reason"] == "corrupt_warc":
            start, end = re.match(r"bytes (\d+)-(\d+):", row["detail"]).groups()
            found.append((int(start), int(end)))
    return found


@pytest.mark.parametrize("damage", ["flip", "zero64", "header"])
@pytest.mark.parametrize("which", ["page", "photo"])
def test_damaged_member_mid_crawl_is_one_span_and_the_rest_is_read(storage, config, tmp_path, damage, which):
    data, urls = crawl()
    spans_by_zlib = members(data)
    # A response member in the middle of the shard: a page (deflated) or a photo (stored).
    index = next(
        i
        for i in range(len(spans_by_zlib) // 2, len(spans_by_zlib))
        if member_url(data, spans_by_zlib[i])[0] == "response" and member_url(data, spans_by_zlib[i])[1].endswith(".jpg" if which == "photo" else ".html")
    )
    start, end = spans_by_zlib[index]
    hit = {"flip": start + (end - start) // 2, "zero64": start + (end - start) // 2, "header": start + 3}[damage]
    damaged = bytearray(data)
    if damage == "zero64":
        damaged[hit : hit + 64] = bytes(64)
    else:
        damaged[hit] ^= 0xFF
    manifests, check = ingest(storage, config, tmp_path, "crawl.warc.gz", bytes(damaged))
    assert spans(storage, manifests) == [(start, end)]
    lost = member_url(data, spans_by_zlib[index])[1]
    assert accounted_urls(storage, manifests) == set(urls) - {lost}
    # A member whose gzip header is destroyed is no record start to the scan either.
    seen = len(spans_by_zlib) - (damage == "header")
    assert check["record_starts"] == seen and check["record_starts_in_rejected_spans"] == (damage != "header")


def test_damage_in_many_members_is_one_span_each(storage, config, tmp_path):
    data, urls = crawl(60)
    spans_by_zlib = members(data)
    rng = random.Random(3)
    chosen = sorted(rng.sample(range(1, len(spans_by_zlib)), 12))
    damaged = bytearray(data)
    for index in chosen:
        start, end = spans_by_zlib[index]
        damaged[rng.randrange(start + 10, end - 8)] ^= 1 << rng.randrange(8)
    manifests, check = ingest(storage, config, tmp_path, "many.warc.gz", bytes(damaged))
    found = spans(storage, manifests)
    # A flipped bit in stored (not deflated) bytes is not a gzip error: the payload digest
    # catches it instead, as a rejection of that record.
    digest_rejected = [
        r for r in rejections(storage, manifests["web_documents"]) + rejections(storage, manifests["web_images"]) if r["reason"] == "payload_digest_mismatch"
    ]
    assert len(found) + len(digest_rejected) >= 1
    assert set(found) <= {spans_by_zlib[i] for i in chosen}
    assert check["records_in_files"] == len(spans_by_zlib) - len(found)
    for index in set(range(len(spans_by_zlib))) - set(chosen):
        kind, url = member_url(data, spans_by_zlib[index])
        if kind == "response":
            assert url in accounted_urls(storage, manifests)


def test_consecutive_damage_is_one_span(storage, config, tmp_path):
    data, urls = crawl(12)
    spans_by_zlib = members(data)
    first, last = spans_by_zlib[5][0], spans_by_zlib[8][1]
    damaged = data[:first] + bytes(range(256)) * ((last - first) // 256) + data[last:]
    manifests, _ = ingest(storage, config, tmp_path, "run.warc.gz", damaged)
    assert len(spans(storage, manifests)) == 1


@pytest.mark.timeout(120)  # it took 507 s and wrote 349,525 rejections before
def test_a_megabyte_of_gzip_magic_is_one_rejection(storage, config, tmp_path):
    magic = (b"\x1f\x8b\x08" * 350_000)[: 1 << 20]
    manifests, _ = ingest(storage, config, tmp_path, "magic.warc.gz", magic)
    assert reasons(storage, manifests["web_documents"]) == ["corrupt_warc"]
    data, urls = crawl(6)
    manifests, _ = ingest(storage, config, tmp_path, "mixed.warc.gz", data[:400] + magic + data[400:])
    assert len(spans(storage, manifests)) == 1


def _with_content_length(data: bytes, url: str, delta: int) -> bytes:
    """``data`` with the Content-Length of the response for ``url`` changed by ``delta``."""
    at = data.index(b"WARC-Type: response\r\nWARC-Target-URI: " + url.encode())
    match = re.compile(rb"Content-Length: (\d+)").search(data, at)
    return data[: match.start(1)] + str(int(match.group(1)) + delta).encode() + data[match.end(1) :]


@pytest.mark.parametrize("delta", [-40, 300, 5])
@pytest.mark.parametrize("gzip_records", [False, True])
def test_wrong_content_length_is_rejected_and_the_next_record_recovered(storage, config, tmp_path, delta, gzip_records):
    mid = "https://x.example.jp/mid.html"

    def add(shard):
        if not gzip_records:
            shard.fetch(mid, good_page("中"), "text/html; charset=utf-8")
            return
        one = ShardWriter("one", gzip=False)
        one.response(mid, good_page("中"), "text/html; charset=utf-8")
        plain = one.getvalue()[len(ShardWriter("one", gzip=False).getvalue()) :]
        shard.raw(gz(_with_content_length(plain, mid, delta)))

    data = shard_around("cl.warc", add, gzip_records)
    if not gzip_records:
        data = _with_content_length(data, mid, delta)
    manifests, _ = ingest(storage, config, tmp_path, "cl.warc", data)
    assert mid not in doc_urls(storage, manifests)
    assert {GOOD_BEFORE, GOOD_AFTER} <= doc_urls(storage, manifests)
    details = [r["detail"] for r in rejections(storage, manifests["web_documents"]) if r["reason"] == "corrupt_warc"]
    assert len(details) == 1 and "Content-Length" in details[0]


@pytest.mark.parametrize("gzip_records", [False, True])
def test_garbage_between_records(storage, config, tmp_path, gzip_records):
    garbage = b"\r\n<html>not a record</html>\r\n" * 20
    data = shard_around("g.warc", lambda s: s.raw(gz(garbage) if gzip_records else garbage), gzip_records)
    manifests, _ = ingest(storage, config, tmp_path, "g.warc", data)
    assert {GOOD_BEFORE, GOOD_AFTER} <= doc_urls(storage, manifests)
    assert reasons(storage, manifests["web_documents"]).count("corrupt_warc") == 1


@pytest.mark.parametrize("body", [b"zz\r\nhello\r\n0\r\n\r\n", b"50\r\nhello\r\n"])
def test_broken_chunked_encoding_is_unreadable_payload(storage, config, tmp_path, body):
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    raw = raw_response("https://bad.example.jp/chunked.html", block, "chunked")
    manifests, _ = ingest(storage, config, tmp_path, "c.warc.gz", shard_around("c.warc.gz", lambda s: s.raw(gz(raw))))
    assert reasons(storage, manifests["web_documents"]).count("unreadable_payload") == 1
    assert {GOOD_BEFORE, GOOD_AFTER} <= doc_urls(storage, manifests)


def test_chunked_and_encoded_pages_are_decoded(storage, config, tmp_path):
    page = good_page("圧縮")

    def add(shard):
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(page), page)
        for name, headers, body in [
            ("chunked", b"Transfer-Encoding: chunked\r\n", chunked),
            ("gzip", b"Content-Encoding: gzip\r\n", gzip.compress(page)),
            ("br", b"Content-Encoding: br\r\n", brotli.compress(page)),
        ]:
            block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" + headers + b"\r\n" + body
            shard.raw(gz(raw_response(f"https://enc.example.jp/{name}.html", block, name)))

    manifests, _ = ingest(storage, config, tmp_path, "enc.warc.gz", shard_around("enc.warc.gz", add))
    htmls = {r["url"]: r["html"] for r in rows(storage, manifests["web_documents"])}
    for name in ("chunked", "gzip", "br"):
        assert htmls[f"https://enc.example.jp/{name}.html"] == page.decode("utf-8")


def _recompressed(data: bytes, how: str) -> bytes:
    plain = gzip.decompress(data)
    if how == "gzip-stream":
        return gzip.compress(plain, mtime=0)
    buffer = io.BytesIO()
    writer = {"lz4": Lz4Writer, "zstd": ZstdWriter}[how](buffer)
    writer.write(plain)
    writer.finish()
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["gzip-stream", "lz4", "zstd"])
def test_single_stream_and_other_compressions_are_read_whole(storage, config, tmp_path, how):
    data, urls = crawl(9)
    manifests, check = ingest(storage, config, tmp_path, f"s.warc.{how}", _recompressed(data, how))
    assert accounted_urls(storage, manifests) == set(urls)
    assert check["warc_layout"] == how and check["record_starts"] == len(members(data))


def test_damaged_single_stream_is_one_span_to_the_end(storage, config, tmp_path):
    data, urls = crawl(150)  # larger than FastWARC's read buffer, so records come before the damage
    stream = bytearray(_recompressed(data, "gzip-stream"))
    stream[len(stream) // 2] ^= 0xFF
    manifests, _ = ingest(storage, config, tmp_path, "d.warc.gz", bytes(stream))
    # Nothing after the damage can be inflated: one span from the last record read to
    # the end of what inflates (offsets in the inflated stream, as the detail says).
    found = spans(storage, manifests)
    details = [r["detail"] for r in rejections(storage, manifests["web_documents"]) if r["reason"] == "corrupt_warc"]
    assert len(found) == 1 and "offsets inflated" in details[0]
    assert 0 < len(accounted_urls(storage, manifests)) < len(urls)


def test_repeated_x_robots_tag_headers_all_count(storage, config, tmp_path):
    def add(shard):
        shard.fetch(
            "https://optout.example.jp/page.html",
            good_page("拒否"),
            "text/html; charset=utf-8",
            extra_headers=[("X-Robots-Tag", "noai"), ("X-Robots-Tag", "noarchive")],
        )
        shard.fetch(
            "https://optout.example.jp/photo.jpg",
            b"\xff\xd8\xff\xd9",
            "image/jpeg",
            extra_headers=[("X-Robots-Tag", "noimageai"), ("X-Robots-Tag", "nosnippet")],
        )

    manifests, _ = ingest(storage, config, tmp_path, "xr.warc.gz", shard_around("xr.warc.gz", add))
    page = next(r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("page.html"))
    assert page["x_robots_tag"] == "noai, noarchive"
    image = next(r for r in rows(storage, manifests["web_images"]) if r["url"].endswith("photo.jpg"))
    assert image["x_robots_tag"] == "noimageai, nosnippet"
    assert "page_noai" in reasons(storage, manifests["interleaved_documents"])


def test_the_check_fails_when_records_vanish(storage, config, tmp_path):
    """The scan counts on its own: rows dropped before they were counted fail the check
    although rows in = rows out + rejected still holds."""
    data, urls = crawl(6)
    path = tmp_path / "v.warc.gz"
    path.write_bytes(data)
    items = list(iter_warc(lambda: open(path, "rb"), "v.warc.gz", 1 << 20))
    assert not any(isinstance(i, CorruptRegion) for i in items)
    assert scan_record_starts(lambda: open(path, "rb")).count == len(items) == len(members(data))
    manifests = run_ingest(storage, config, tmp_path, "v.warc.gz", data)
    assert starts_check(storage, manifests)["passed"]
    manifests["web_documents"].source["record_starts"] = str(len(items) + 1)  # one start more than rows
    assert not starts_check(storage, manifests)["passed"]
