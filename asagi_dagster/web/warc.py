"""Streaming WARC reading (FastWARC) that never drops a record silently.

FastWARC parses the records; this module adds what a crawl shard in the wild needs:

- Every damaged region (a corrupt or cut gzip member, garbage between records, a record
  whose Content-Length is wrong, a file that is not a WARC) becomes one ``CorruptRegion``
  naming its byte span, and reading resumes at the next record start after it.
- ``scan_record_starts`` counts record starts independently of the reader (gzip members
  that inflate to a WARC header, or ``WARC/1.x`` lines), so a check can show that no
  record vanished between the file and the rows.

Per-record gzip, plain, single-stream gzip, LZ4 and zstd files are read; only the
first two can be resynchronised after damage (a compressed stream has no record
boundaries to find), so damage in the others is one region from there to the end.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastwarc import ArchiveIterator, WarcRecordType
from fastwarc.stream_io import BrotliReader, ChunkedReader, GzipReader, Lz4Reader, ZstdReader

GZIP_MAGIC = b"\x1f\x8b\x08"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_WARC_VERSION = re.compile(rb"WARC/1\.[01]\r\n")  # a record's first line
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*(\d+)[ \t]*\r\n", re.I)
_SCAN_CHUNK = 1 << 20
_MAX_WARC_HEADER = 32 << 10  # FastWARC's default header limit
_HEAD_BYTES = 1024  # enough of a gzip member to inflate its first line (Huffman tables first)


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


@dataclass(slots=True)
class CorruptRegion:
    offset: int
    end: int  # exclusive: reading resumed here
    error: str


def iter_warc(open_file: Callable[[], BinaryIO], shard: str, max_payload_bytes: int) -> Iterator[WarcRecord | CorruptRegion]:
    """Yield every record of a WARC file and every damaged region, in file order.

    ``open_file`` opens the shard (a local or an fsspec file, seekable). A record is
    yielded only once the next one parsed, or the file ended cleanly: when reading
    fails, the record before the failure is checked against its own Content-Length
    first, since a wrong length is what makes the next header unreadable.
    """
    with open_file() as f:
        layout = _layout(f)
        if layout in STREAM_LAYOUTS:
            yield from _iter_stream(f, layout, shard, max_payload_bytes)
            return
        size = f.seek(0, 2)
        start = 0
        while start < size:
            f.seek(start)
            held: WarcRecord | None = None
            try:
                for raw in ArchiveIterator(f, parse_http=False):
                    record = _read_record(raw, f"{shard}@{raw.stream_pos}", max_payload_bytes)
                    if held is not None:
                        yield held
                    held = record
            except Exception as exc:  # FastWARC raises OSError (and others) for damaged input
                error = f"{type(exc).__name__}: {exc}"
            else:  # FastWARC ended quietly, which it also does at a member cut short
                if held is None:
                    yield CorruptRegion(offset=start, end=size, error="no WARC record could be read from here to the end")
                    return
                yield held
                end = _record_end(f, held.offset)
                if end is None or end >= size:  # None: held itself is cut short, and flagged so
                    return
                start = end  # bytes after the last record read: read on from there
                continue
            bad = start
            if held is not None:
                end = _record_end(f, held.offset)
                if end is not None:
                    yield held  # sound: the damage starts after it, so read on from there
                    start = end
                    continue
                error = f"record {held.record_id} at {held.offset} does not end where its Content-Length says; then {error}"
                bad = held.offset
            resume = _next_start(f, bad + 1, size)
            yield CorruptRegion(offset=bad, end=resume, error=error)
            start = resume


def _iter_stream(f: BinaryIO, layout: str, shard: str, max_payload_bytes: int) -> Iterator[WarcRecord | CorruptRegion]:
    """A compressed stream: read through our own inflater, so offsets are exact positions
    in the inflated stream and damage ends it cleanly; nothing after damage can be read."""
    stream = _InflatedStream(f, layout)
    held: WarcRecord | None = None
    error = None
    try:
        for raw in ArchiveIterator(stream, parse_http=False, stream_detect=False):
            record = _read_record(raw, f"{shard}@{raw.stream_pos}", max_payload_bytes)
            if held is not None:
                yield held
            held = record
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if held is not None:
        yield held  # a record cut by the damage is flagged short by _read_record
    if error or stream.error:
        while stream.read(_SCAN_CHUNK):  # the span runs to the end of what can be inflated
            pass
        start = held.offset + 1 if held is not None else 0
        why = "; ".join(e for e in (stream.error, error) if e)
        yield CorruptRegion(offset=start, end=stream.position, error=f"{layout} stream (offsets inflated): {why}")


def _read_record(raw, fallback_id: str, max_payload_bytes: int) -> WarcRecord:
    headers = raw.headers
    offset = raw.stream_pos
    record_id = raw.record_id or fallback_id
    warc_type = headers.get("WARC-Type") or ""
    target_uri = headers.get("WARC-Target-URI")
    if target_uri and target_uri[:1] == "<" and target_uri[-1:] == ">":
        target_uri = target_uri[1:-1]  # WARC 1.0's grammar put the URI in <>; wget still writes it so
    if raw.record_type != WarcRecordType.response:  # rejected by type alone: read nothing more
        return WarcRecord(record_id, offset, warc_type, target_uri, None, None, None, None, None, None, None, None, None)
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
        if not sound and not payload_error and not _digest_matches(declared, body) and not (
            payload is not body and _digest_matches(declared, payload)
        ):
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
    readers = []
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
        stream = io.BytesIO(body)
        for reader in readers:
            stream = reader(stream)
        payload = stream.read(max_bytes + 1)
    except Exception as exc:  # broken chunk framing or compressed data
        return None, short or f"{type(exc).__name__}: {exc}", False
    if len(payload) > max_bytes:
        return None, f"decoded payload larger than {max_bytes} bytes", True
    return payload, short, False


_CONTENT_DECODERS = {
    "gzip": GzipReader,
    "x-gzip": GzipReader,
    "deflate": lambda inner: GzipReader(inner, zlib=True),
    "br": BrotliReader,
}


def _record_end(f: BinaryIO, offset: int) -> int | None:
    """Where the record at ``offset`` ends if it ends where its Content-Length says (its
    block, then CRLF CRLF, and for a gzip member nothing more); else None."""
    f.seek(offset)
    head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        member = _inflate_member(f, offset)
        if member is None:
            return None
        data, end = member
        return end if _block_complete(data) else None
    if head == b"WARC":
        f.seek(offset)
        header = f.read(_MAX_WARC_HEADER)
        header_end = header.find(b"\r\n\r\n")
        length = _CONTENT_LENGTH.search(header, 0, header_end + 2) if header_end >= 0 else None
        if length is None:
            return None
        block_end = offset + header_end + 4 + int(length.group(1))
        f.seek(block_end)
        if f.read(4) != b"\r\n\r\n":
            return None
        return block_end + 4
    return None


def _block_complete(data: bytes) -> bool:
    """An inflated gzip member holds exactly one record: header, block of its Content-Length, CRLF CRLF."""
    header_end = data.find(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(data, 0, header_end + 2) if header_end >= 0 else None
    return length is not None and len(data) == header_end + 4 + int(length.group(1)) + 4 and data.endswith(b"\r\n\r\n")


def _inflate_member(f: BinaryIO, offset: int) -> tuple[bytes, int] | None:
    """The inflated gzip member at ``offset`` and where it ends, or None when it is damaged."""
    f.seek(offset)
    inflater = zlib.decompressobj(31)
    out, consumed = [], 0
    try:
        while not inflater.eof:
            chunk = f.read(_SCAN_CHUNK)
            if not chunk:
                return None  # cut short
            out.append(inflater.decompress(chunk))
            consumed += len(chunk) - len(inflater.unused_data)
    except zlib.error:
        return None
    return b"".join(out), offset + consumed


def _starts_record(head: bytes) -> bool:
    """``head`` (bytes from a candidate offset) begins a WARC record: a version line, or
    a gzip member whose first inflated bytes are one. Only the first bytes are inflated."""
    if head.startswith(b"WARC/1.") and _WARC_VERSION.match(head):
        return True
    if not head.startswith(GZIP_MAGIC) or len(head) < 18 or head[3] & 0xE0:  # reserved flag bits must be zero
        return False
    try:
        start = zlib.decompressobj(31).decompress(head, 10)
    except zlib.error:
        return False
    return _WARC_VERSION.match(start) is not None


def _next_start(f: BinaryIO, start: int, size: int) -> int:
    """Offset of the next record start at or after ``start``, or ``size``."""
    for offset in _candidate_starts(f, start, size):
        return offset
    return size


def _candidate_starts(f: BinaryIO, start: int, size: int, markers: tuple[str, ...] = ("gzip", "warc")) -> Iterator[int]:
    """Every offset from ``start`` on where a record starts (a gzip member inflating to a
    WARC header, or a WARC version line at a line start), in order; ``markers`` says
    which of the two kinds to look for."""
    position = start
    previous = b"\n" if start == 0 else _byte_at(f, start - 1)
    while position < size:
        f.seek(position)
        # The extra bytes let a candidate near the end of the chunk be checked.
        chunk = f.read(_SCAN_CHUNK + _HEAD_BYTES)
        if not chunk:
            return
        for hit in _marker_hits(chunk, previous, _SCAN_CHUNK, markers):
            if _starts_record(chunk[hit : hit + _HEAD_BYTES]):
                yield position + hit
        previous = chunk[_SCAN_CHUNK - 1 : _SCAN_CHUNK]
        position += _SCAN_CHUNK


def _byte_at(f: BinaryIO, position: int) -> bytes:
    f.seek(position)
    return f.read(1)


def _marker_hits(chunk: bytes, previous: bytes, limit: int, markers: tuple[str, ...]) -> list[int]:
    """Offsets below ``limit`` in ``chunk`` of gzip magic bytes and of ``WARC/1.`` at a
    line start (``previous`` is the byte before the chunk), sorted."""
    hits = []
    if "gzip" in markers:
        hits += [m.start() for m in _GZIP_MAGIC_RE.finditer(chunk, 0, limit + 2)]  # re beats bytes.find on 3 bytes
    if "warc" in markers:
        index = chunk.find(b"WARC/1.", 0, limit + 6)
        while index >= 0:
            if (chunk[index - 1 : index] if index else previous) == b"\n":
                hits.append(index)
            index = chunk.find(b"WARC/1.", index + 1, limit + 6)
    return sorted(hits)


_GZIP_MAGIC_RE = re.compile(re.escape(GZIP_MAGIC))


# --- the independent count -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordStarts:
    """Record starts a scan of the raw file saw, without parsing any record: offsets of
    gzip members that inflate to a WARC header, or of WARC version lines at line starts.
    For a compressed stream (one gzip member, LZ4, zstd) they are offsets in the inflated
    stream, up to where it could be inflated, as the reader's are."""

    layout: str  # gzip-members | plain | unknown | gzip-stream | lz4 | zstd
    offsets: list[int]

    @property
    def count(self) -> int:
        return len(self.offsets)

    def within(self, start: int, end: int) -> int:
        """How many of the starts lie in [start, end)."""
        return bisect_left(self.offsets, end) - bisect_left(self.offsets, start)


def scan_record_starts(open_file: Callable[[], BinaryIO]) -> RecordStarts:
    with open_file() as f:
        layout = _layout(f)
        if layout in STREAM_LAYOUTS:
            return RecordStarts(layout, _inflated_starts(_InflatedStream(f, layout)))
        # A plain file's records start with version lines, a gzip file's with members:
        # looking for the other kind too would cost half the scan for nothing.
        markers = {"gzip-members": ("gzip",), "plain": ("warc",)}.get(layout, ("gzip", "warc"))
        return RecordStarts(layout, list(_candidate_starts(f, 0, f.seek(0, 2), markers)))


STREAM_LAYOUTS = ("gzip-stream", "lz4", "zstd")
_FIRST_MEMBER_PROBE = 1 << 20


def _layout(f: BinaryIO) -> str:
    """How the file is laid out. A gzip file is read member by member (and resynchronised
    after damage) unless its first member holds more than one record: then it is one
    compressed stream."""
    f.seek(0)
    head = f.read(_FIRST_MEMBER_PROBE)
    f.seek(0)
    if head.startswith(LZ4_MAGIC):
        return "lz4"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(b"WARC"):
        return "plain"
    if not head.startswith(GZIP_MAGIC):
        return "unknown"
    inflater, first = zlib.decompressobj(31), b""
    for at in range(0, len(head), 1 << 16):  # in pieces: an error loses only its own piece
        try:
            first += inflater.decompress(head[at : at + (1 << 16)], 1 << 20)  # capped: only its first records matter
        except zlib.error:
            break  # damage: members can still be found after it, if it has any
        if inflater.eof or _INFLATED_WARC_LINE.search(first):
            break
    return "gzip-stream" if _INFLATED_WARC_LINE.search(first) else "gzip-members"


def _inflated_starts(stream: _InflatedStream) -> list[int]:
    """Offsets of WARC version lines at line starts in an inflated stream."""
    offsets, tail, base = [], b"\n", -1  # as if a line ended just before the stream
    while chunk := stream.read(_SCAN_CHUNK):
        window = tail + chunk
        offsets += [base + m.start() + 1 for m in _INFLATED_WARC_LINE.finditer(window)]
        tail = window[-10:]  # one byte short of a match, so none is counted twice
        base += len(window) - len(tail)
    return offsets


_INFLATED_WARC_LINE = re.compile(rb"\nWARC/1\.[01]\r\n")


class _InflatedStream:
    """A compressed WARC stream as a readable file of its inflated bytes: gzip (every
    member) by zlib, LZ4 and zstd by FastWARC's readers. Damage ends it: ``read`` then
    returns b"" and ``error`` says why, so what came before is read whole."""

    def __init__(self, f: BinaryIO, layout: str):
        self.f = f
        self.layout = layout
        self.position = 0
        self.error: str | None = None
        f.seek(0)
        self._inflater = zlib.decompressobj(31) if layout == "gzip-stream" else None
        self._reader = {"lz4": Lz4Reader, "zstd": ZstdReader}[layout](f) if self._inflater is None else None
        self._pending = b""
        self._in_member = False

    def read(self, n: int = -1) -> bytes:
        if self.error:
            return b""
        try:
            data = self._read(n if n > 0 else 1 << 20)
        except Exception as exc:  # zlib.error, or the reader's OSError
            self.error = f"cannot inflate past {self.position}: {type(exc).__name__}: {exc}"
            return b""
        self.position += len(data)
        return data

    def _read(self, n: int) -> bytes:
        if self._reader is not None:
            return self._reader.read(n)
        while not self._pending:
            inflater = self._inflater
            if inflater.eof:  # the next member of a multi-member stream, if any
                chunk = inflater.unused_data or self.f.read(1 << 16)
                if not chunk:
                    return b""
                inflater = self._inflater = zlib.decompressobj(31)
            else:
                chunk = inflater.unconsumed_tail or self.f.read(1 << 16)
                if not chunk:
                    if self._in_member:
                        raise EOFError("the stream ends inside a gzip member")
                    return b""
            self._in_member = True
            # Capped, so a small member that inflates hugely cannot take the memory.
            self._pending = inflater.decompress(chunk, 1 << 20)
            self._in_member = not inflater.eof
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        pass
