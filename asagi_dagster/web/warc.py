"""Streaming WARC reading that survives damaged files.

warcio reads records one at a time; this module adds what a crawl shard in the wild
needs: a damaged region (a truncated gzip member, garbage between records, a file that
is not a WARC at all) becomes a ``CorruptRegion`` and reading resumes at the next
record boundary, so one bad member never costs the rest of the shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from warcio.archiveiterator import ArchiveIterator

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
_SCAN_CHUNK = 1 << 20


@dataclass(slots=True)
class WarcRecord:
    record_id: str
    offset: int
    warc_type: str
    target_uri: str | None
    warc_date: str | None
    warc_truncated: str | None
    http_protocol: str | None
    http_status: str | None
    content_type: str | None
    x_robots_tag: str | None
    payload: bytes | None  # None when over the size cap or unreadable
    payload_error: str | None  # why payload is None, or a truncation
    payload_digest: str | None  # WARC-Payload-Digest when declared, else sha1 of what was read
    oversize: bool = False  # payload is None because it is over the size cap


@dataclass(slots=True)
class CorruptRegion:
    offset: int
    error: str


def iter_warc(open_file: Callable[[], BinaryIO], shard: str, max_payload_bytes: int) -> Iterator[WarcRecord | CorruptRegion]:
    """Yield every record of a WARC (gzipped per record or plain) and every damaged region.

    ``open_file`` opens the shard (a local or an fsspec file, seekable); after a damaged
    region, reading seeks to the next record boundary in the same file.
    """
    start = 0
    with open_file() as f:
        size = f.seek(0, 2)
        while start < size:
            f.seek(start)
            # HTTP headers are parsed in _read_record, and only for responses: the rest
            # (half of a crawl is requests) is rejected by type alone.
            iterator = ArchiveIterator(f, arc2warc=False, no_record_parse=True)
            try:
                for record in iterator:
                    if record.format != "warc":  # warcio also reads ARC; a shard must be WARC
                        raise ValueError(f"not a WARC record (looks like {record.format})")
                    yield _read_record(record, iterator, shard, max_payload_bytes)
                if iterator.offset >= size:
                    return
                # warcio stops quietly at a gzip member cut short at the end of the file.
                error = "unreadable bytes after the last complete record (truncated gzip member?)"
            except Exception as exc:  # warcio raises several types for damaged input
                error = f"{type(exc).__name__}: {exc}"
            bad = iterator.offset if iterator.offset >= start else start
            yield CorruptRegion(offset=bad, error=error)
            start = _next_boundary(f, bad + 1, size)


def _header_map(headers) -> dict[str, str]:
    """Lower-cased names to values, built once (warcio's get_header scans the list each call)."""
    return {name.lower(): value for name, value in headers.headers} if headers else {}


def _read_record(record, iterator: ArchiveIterator, shard: str, max_payload_bytes: int) -> WarcRecord:
    if record.rec_type != "response":  # rejected by type alone: read nothing more (half of a crawl is requests)
        offset = iterator.get_record_offset()
        record_id = record.rec_headers.get_header("WARC-Record-ID") or f"{shard}@{offset}"
        return WarcRecord(record_id, offset, record.rec_type or "", record.rec_headers.get_header("WARC-Target-URI"),
                          None, None, None, None, None, None, None, None, None)
    warc = _header_map(record.rec_headers)
    # What warcio does for every record unless no_record_parse; a parse error is a
    # damaged region, as it would be inside the iterator.
    http = iterator.loader.load_http_headers(record.rec_type, warc.get("warc-target-uri") or "", record.raw_stream, record.length)
    record.http_headers = http  # content_stream() undoes chunking and content encodings by these
    http_map = _header_map(http)
    payload: bytes | None = None
    payload_error: str | None = None
    digest: str | None = None
    oversize = False
    try:
        stream = record.content_stream()
        payload = stream.read(max_payload_bytes + 1)
        if len(payload) > max_payload_bytes:
            payload, payload_error, oversize = None, f"payload larger than {max_payload_bytes} bytes", True
        elif record.raw_stream.limit > 0:
            payload_error = f"record ends {record.raw_stream.limit} bytes short of its Content-Length"
        if payload is not None:
            digest = warc.get("warc-payload-digest") or "sha1:" + hashlib.sha1(payload).hexdigest()
    except Exception as exc:  # broken chunked or content encodings
        payload, payload_error = None, f"{type(exc).__name__}: {exc}"
    offset = iterator.get_record_offset()  # only after the payload: warcio reads to the record's end here
    return WarcRecord(
        record_id=warc.get("warc-record-id") or f"{shard}@{offset}",
        offset=offset,
        warc_type=record.rec_type or "",
        target_uri=warc.get("warc-target-uri"),
        warc_date=warc.get("warc-date"),
        warc_truncated=warc.get("warc-truncated"),
        http_protocol=http.protocol if http else None,
        http_status=http.get_statuscode() if http else None,
        content_type=http_map.get("content-type"),
        x_robots_tag=http_map.get("x-robots-tag"),
        payload=payload,
        payload_error=payload_error,
        payload_digest=digest,
        oversize=oversize,
    )


def _next_boundary(f: BinaryIO, start: int, size: int) -> int:
    """Offset of the next plausible record start (a gzip member or ``WARC/1.``), or ``size``."""
    f.seek(start)
    position = start
    tail = b""
    while position < size:
        chunk = f.read(_SCAN_CHUNK)
        if not chunk:
            break
        window = tail + chunk
        base = position - len(tail)
        hits = [i for i in (window.find(GZIP_MAGIC), _find_warc_line(window)) if i >= 0]
        if hits:
            return base + min(hits)
        tail = window[-8:]
        position += len(chunk)
    return size


def _find_warc_line(window: bytes) -> int:
    index = window.find(b"\n" + WARC_MAGIC)
    return index + 1 if index >= 0 else -1
