"""Streaming WARC reading (FastWARC) that never drops a record silently.

FastWARC parses the records; this module adds what a crawl shard in the wild needs.
Reading is checked against the record starts an independent scan found
(``warc_starts``): a record that runs over the next start (a wrong Content-Length, a
header cut and merged with the next one) is damage, not a row, and reading resumes at
that start. Every damaged region (a corrupt or cut gzip member, garbage, such a record,
a file that is not a WARC) becomes one ``CorruptRegion`` naming its byte span.

Per-record gzip, plain, single-stream gzip, LZ4 and zstd files are read; only the
first two can be resynchronised after damage (a compressed stream has no record
boundaries to find), so damage in the others is one region from there to the end.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from fastwarc import ArchiveIterator, WarcRecordType
from fastwarc.stream_io import BrotliReader, ChunkedReader, GzipReader, WarcReader

from asagi_dagster.web.warc_starts import (
    SCAN_CHUNK,
    STREAM_LAYOUTS,
    InflatedStream,
    RecordStarts,
    record_end,
    scan_open_file,
)


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
    x_robots_tag: str | None  # every X-Robots-Tag header of the response, comma-joined
    payload: bytes | None  # None when over the size cap or unreadable
    payload_error: str | None  # why payload is None, or a truncation
    payload_digest: str | None  # WARC-Payload-Digest when declared, else sha1 of what was read
    oversize: bool = False  # payload is None because it is over the size cap
    digest_mismatch: str | None = None  # the declared WARC-Payload-Digest the bytes do not have
    problem: tuple[str, str] | None = None  # (reason, detail) when the record is no readable HTTP response


@dataclass(slots=True)
class CorruptRegion:
    offset: int
    end: int  # exclusive: reading resumed here
    error: str


@dataclass(slots=True)
class ReadingNotes:
    """What the reader saw that explains a difference from the scan's count, for the
    check to show: starts inside records whose own Content-Length holds them (a WARC
    quoted in a payload), and records sharing a gzip member (and so its start)."""

    embedded_starts: int = 0
    shared_starts: int = 0


def iter_warc(
    open_file: Callable[[], BinaryIO],
    shard: str,
    max_payload_bytes: int,
    starts: RecordStarts | None = None,
    notes: ReadingNotes | None = None,
) -> Iterator[WarcRecord | CorruptRegion]:
    """Yield every record of a WARC file and every damaged region, in file order.

    ``open_file`` opens the shard (a local or an fsspec file, seekable); ``starts`` is
    the scan of the same file (made here when not given, the same way). ``notes`` collects what the
    record-start check needs to know beyond the rows."""
    notes = notes if notes is not None else ReadingNotes()
    with open_file() as f:
        if starts is None:
            starts = scan_open_file(f)
        # The scan's layout, not a second probe of the file (up to 4 MiB inflated for a stream).
        if starts.layout in STREAM_LAYOUTS:
            yield from _iter_stream(f, starts.layout, shard, max_payload_bytes)
            return
        yield from _Reader(f, f.seek(0, 2), starts, shard, max_payload_bytes, notes).records()


class _Reader:
    """Reads a per-record gzip or plain file segment by segment: a segment is one
    FastWARC pass from a record start, ended by damage, by a record that runs over a
    start, or by the end of the file.

    A record is handed on only once it is known to be sound: when the next one parsed
    at its end, or when its own Content-Length is checked (``record_end``) because the
    scan saw a start inside it, reading failed after it, or the file ended."""

    def __init__(self, f: BinaryIO, size: int, starts: RecordStarts, shard: str, max_payload_bytes: int, notes: ReadingNotes):
        self.f, self.size, self.starts, self.shard = f, size, starts, shard
        self.max_payload_bytes, self.notes = max_payload_bytes, notes

    def records(self) -> Iterator[WarcRecord | CorruptRegion]:
        start = 0
        while start < self.size:
            start = yield from self._segment(start)

    def _segment(self, start: int):
        """Yields what one pass reads; returns where the next pass starts (past ``start``)."""
        self.f.seek(start)
        held: WarcRecord | None = None
        try:
            for raw in ArchiveIterator(self.f, parse_http=False):
                record = _read_record(raw, f"{self.shard}@{raw.stream_pos}", self.max_payload_bytes)
                if held is not None:
                    if record.offset == held.offset:  # several records in one gzip member
                        self.notes.shared_starts += 1
                        yield held
                    else:
                        restart = yield from self._settle(held, record.offset)
                        if restart is not None:
                            return restart
                held = record
        except Exception as exc:  # FastWARC raises OSError (and others) for damaged input
            return (yield from self._after_failure(start, held, f"{type(exc).__name__}: {exc}"))
        return (yield from self._after_quiet_end(start, held))

    def _settle(self, held: WarcRecord, next_offset: int):
        """The next record parsed at ``next_offset``: hand ``held`` on, unless a start lies
        between them. Returns where to read on from when the pass must restart."""
        inner = self.starts.after(held.offset)
        if inner is None or inner >= next_offset:
            yield held  # the common case: one bisect, no extra reading
            return None
        position = self.f.tell()  # FastWARC is reading this file: put it back where it was
        end = record_end(self.f, held.offset, self.size)
        self.f.seek(position)
        if end is None:
            yield CorruptRegion(held.offset, inner, _overrun(held, inner))
            return inner
        yield from self._sound(held, end)
        after = self.starts.after(end - 1)
        if after is None or after >= next_offset:
            return None  # the starts inside it were its payload's
        # FastWARC read past a record start: the pass restarts there (so the file may move).
        if after > end and not self._blank(end, after):
            yield CorruptRegion(end, after, "bytes between records that are no record")
        return after

    def _after_failure(self, start: int, held: WarcRecord | None, error: str):
        bad = start
        if held is not None:
            end = record_end(self.f, held.offset, self.size)
            if end is not None:
                yield from self._sound(held, end)
                return end  # the damage lies after it: read on from there
            error = f"record {held.record_id} at {held.offset} does not end where its Content-Length says; then {error}"
            bad = held.offset
        resume = self.starts.after(bad) or self.size
        if not self._blank(bad, resume):
            yield CorruptRegion(bad, resume, error)
        return resume

    def _after_quiet_end(self, start: int, held: WarcRecord | None):
        """FastWARC stopped without an error, as it also does at a member cut short or a
        Content-Length that runs to the end of the file."""
        if held is None:
            resume = self.starts.after(start) or self.size
            if not self._blank(start, resume):
                yield CorruptRegion(start, resume, "no WARC record could be read here")
            return resume
        end = record_end(self.f, held.offset, self.size)
        later = self.starts.after(held.offset)
        if end is None:
            if later is None:
                if not self.starts.seen(held.offset):  # a header cut inside its first line: FastWARC reads one, the scan none
                    yield CorruptRegion(held.offset, self.size, "a record header cut short at the end of the file")
                    return self.size
                yield held  # the last record, cut short: its payload error says so
                return self.size
            yield CorruptRegion(held.offset, later, _overrun(held, later))
            return later
        yield from self._sound(held, end)
        after = self.starts.after(end - 1)
        resume = after if after is not None else self.size
        if resume > end and not self._blank(end, resume):
            yield CorruptRegion(end, resume, "bytes after a record that are no record")
        return resume

    def _sound(self, held: WarcRecord, end: int):
        """``held`` ends where its Content-Length says: starts the scan saw inside it are
        its payload's (a WARC quoted in a page), not records."""
        self.notes.embedded_starts += self.starts.within(held.offset + 1, end)
        yield held

    def _blank(self, start: int, end: int) -> bool:
        """Only whitespace (some writers add CRLFs between or after records)."""
        if end - start > 4096:
            return False
        self.f.seek(start)
        return not self.f.read(end - start).strip(b" \t\r\n\x00")


def _overrun(held: WarcRecord, start: int) -> str:
    return f"record {held.record_id} at {held.offset} does not end where its Content-Length says and runs over the record starting at {start}"


def _iter_stream(f: BinaryIO, kind: str, shard: str, max_payload_bytes: int) -> Iterator[WarcRecord | CorruptRegion]:
    """A compressed stream: read through our own inflater, so offsets are exact positions
    in the inflated stream and damage ends it cleanly; nothing after damage can be read."""
    stream = InflatedStream(f, kind)
    held: WarcRecord | None = None
    error = None
    try:
        for raw in ArchiveIterator(stream, parse_http=False, stream_detect=False):  # type: ignore[arg-type]  # it only reads (no seek)
            record = _read_record(raw, f"{shard}@{raw.stream_pos}", max_payload_bytes)
            if held is not None:
                yield held
            held = record
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if held is not None:
        yield held  # a record cut by the damage is flagged short by _read_record
    if error or stream.error:
        while stream.read(SCAN_CHUNK):  # the span runs to the end of what can be inflated
            pass
        start = held.offset + 1 if held is not None else 0
        why = "; ".join(e for e in (stream.error, error) if e)
        yield CorruptRegion(offset=start, end=stream.position, error=f"{kind} stream (offsets inflated): {why}")


def _read_record(raw, fallback_id: str, max_payload_bytes: int) -> WarcRecord:
    """One record; whatever goes wrong inside it is that record's rejection, never the
    end of the shard."""
    try:
        return _parse_record(raw, fallback_id, max_payload_bytes)
    except Exception as exc:
        problem = ("unreadable_record", f"{type(exc).__name__}: {exc}")
        return WarcRecord(raw.record_id or fallback_id, raw.stream_pos, "response", None, None, None, None, None, None, None, None, None, None, problem=problem)


def _parse_record(raw, fallback_id: str, max_payload_bytes: int) -> WarcRecord:
    headers = raw.headers
    offset = raw.stream_pos
    record_id = raw.record_id or fallback_id
    warc_type = headers.get("WARC-Type") or ""
    target_uri = headers.get("WARC-Target-URI")
    if target_uri and target_uri[:1] == "<" and target_uri[-1:] == ">":
        target_uri = target_uri[1:-1]  # WARC 1.0's grammar put the URI in <>; wget still writes it so
    if raw.record_type != WarcRecordType.response:  # rejected by type alone: read nothing more
        return WarcRecord(record_id, offset, warc_type, target_uri, None, None, None, None, None, None, None, None, None)
    if not raw.is_http:
        warc_content_type = headers.get("Content-Type")
        if warc_content_type:  # a DNS lookup (text/dns), a screenshot...: content, but no HTTP response
            return WarcRecord(
                record_id, offset, warc_type, target_uri, None, None, None, None, None, None, None, None, None, problem=("non_http_response", warc_content_type)
            )
        raw.is_http = True  # no Content-Type to say so: read it as HTTP, as warcio did
    raw.parse_http()  # headers only; the body is decoded here, so a bad body cannot derail the iterator
    http = raw.http_headers
    status_line = http.status_line or ""
    protocol, _, rest = status_line.partition(" ")
    expected = raw.content_length  # the HTTP body's length, once the headers are parsed
    declared = headers.get("WARC-Payload-Digest")
    # Damage in bytes gzip stores uncompressed (photos) is no gzip error, and FastWARC
    # does not check a member's CRC: the declared digest is what catches it. FastWARC
    # hashes the body as stored (in Rust, about 2.5x hashlib here) before it is read;
    # only bodies under the cap, since it holds the body to hash it.
    sound = not declared or (expected <= max_payload_bytes and raw.verify_payload_digest(consume=False))
    body = raw.reader.read(max_payload_bytes + 1)
    payload, payload_error, oversize = _decode_body(body, expected, http, max_payload_bytes)
    digest = mismatch = None
    if payload is not None:
        digest = declared or "sha1:" + hashlib.sha1(payload).hexdigest()
        # Writers hash the body as sent or as decoded, in base32 or hex: either matches.
        if not sound and not payload_error and not _digest_matches(declared, body) and not (payload is not body and _digest_matches(declared, payload)):
            mismatch = declared
    robots = http.get_multiple("X-Robots-Tag")
    return WarcRecord(
        record_id=record_id,
        offset=offset,
        warc_type=warc_type,
        target_uri=target_uri,
        warc_date=headers.get("WARC-Date"),
        warc_truncated=headers.get("WARC-Truncated"),
        http_protocol=protocol or None,
        http_status=rest.split(" ", 1)[0] or None,
        content_type=http.get("Content-Type"),
        x_robots_tag=", ".join(robots) if robots else None,
        payload=payload,
        payload_error=payload_error,
        payload_digest=digest,
        oversize=oversize,
        digest_mismatch=mismatch,
    )


def _digest_matches(declared: str, data: bytes) -> bool:
    """``data`` has the declared digest (base32 or hex); True for an algorithm we do not know."""
    algorithm, _, value = declared.partition(":")
    algorithm = algorithm.strip().lower().replace("-", "")
    if algorithm not in hashlib.algorithms_guaranteed or not value:
        return True
    actual = hashlib.new(algorithm, data).digest()
    value = value.strip()
    return value.upper().rstrip("=") == base64.b32encode(actual).decode().rstrip("=") or value.lower() == actual.hex()


def _decode_body(body: bytes, expected: int, http, max_bytes: int) -> tuple[bytes | None, str | None, bool]:
    """The payload with its transfer and content encodings undone: (payload, error, oversize).

    A payload cut short is returned with an error saying so (the caller rejects it)."""
    if len(body) > max_bytes:
        return None, f"payload larger than {max_bytes} bytes", True
    short = f"record ends {expected - len(body)} bytes short of its Content-Length" if len(body) < expected else None
    readers: list[Callable[[Any], WarcReader]] = []
    if "chunked" in (http.get("Transfer-Encoding") or "").lower():
        readers.append(ChunkedReader)
    for coding in reversed([c.strip().lower() for c in (http.get("Content-Encoding") or "").split(",") if c.strip()]):
        if coding == "identity":
            continue
        reader = _CONTENT_DECODERS.get(coding)
        if reader is None:
            return None, f"unsupported Content-Encoding {coding!r}", False
        readers.append(reader)
    if not readers:
        return body, short, False
    try:
        stream: io.BytesIO | WarcReader = io.BytesIO(body)
        for reader in readers:
            stream = reader(stream)
        payload = stream.read(max_bytes + 1)
    except Exception as exc:  # broken chunk framing or compressed data
        return None, short or f"{type(exc).__name__}: {exc}", False
    if len(payload) > max_bytes:
        return None, f"decoded payload larger than {max_bytes} bytes", True
    return payload, short, False


_CONTENT_DECODERS: dict[str, Callable[[Any], WarcReader]] = {
    "gzip": GzipReader,
    "x-gzip": GzipReader,
    "deflate": lambda inner: GzipReader(inner, zlib=True),
    "br": BrotliReader,
}
