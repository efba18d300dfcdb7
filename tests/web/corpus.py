"""Small WARC shards for tests: good pages around one bad case each."""

from __future__ import annotations

import gzip

from asagi_sample.warcs import ShardWriter

GOOD_BEFORE = "https://good.example.jp/before.html"
GOOD_AFTER = "https://good.example.jp/after.html"


def good_page(title: str, image: str = "https://good.example.jp/photo.jpg") -> bytes:
    return (
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<p>これは正常なページです。</p><img src='{image}' alt='正常な写真'><p>おわり</p></body></html>"
    ).encode("utf-8")


def shard_around(name: str, add_bad, gzip_records: bool = True) -> bytes:
    """A shard: a good page, whatever ``add_bad(writer)`` writes, another good page."""
    shard = ShardWriter(name, gzip=gzip_records)
    shard.fetch(GOOD_BEFORE, good_page("前"), "text/html; charset=utf-8")
    add_bad(shard)
    shard.fetch(GOOD_AFTER, good_page("後"), "text/html; charset=utf-8")
    return shard.getvalue()


def raw_response(url: str, http_block: bytes, record_key: str) -> bytes:
    """A response record written by hand, for HTTP blocks warcio refuses to write."""
    from asagi_sample.warcs import CRAWL_DATE, record_id

    headers = (
        "WARC/1.1\r\nWARC-Type: response\r\n"
        f"WARC-Record-ID: {record_id(record_key)}\r\nWARC-Date: {CRAWL_DATE}\r\nWARC-Target-URI: {url}\r\n"
        "Content-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http_block)}\r\n\r\n"
    ).encode()
    return headers + http_block + b"\r\n\r\n"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
