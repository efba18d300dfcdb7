"""Where a WARC file's records start, found without parsing a record.

- ``layout``: per-record gzip members, plain, or one compressed stream (gzip, LZ4, zstd).
- ``scan_record_starts``: the independent count a check compares the rows with: gzip
  members whose first bytes inflate to a WARC version line, or such lines; for a
  compressed stream, version lines at line starts in the inflated stream.
- ``record_end``: where a record ends by its own Content-Length, if it does, read in
  bounded memory (a gzip member is inflated as a stream and walked record by record).
- ``InflatedStream``: a compressed stream as a file of its inflated bytes that ends
  cleanly at damage.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastwarc.stream_io import Lz4Reader, ZstdReader

GZIP_MAGIC = b"\x1f\x8b\x08"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STREAM_LAYOUTS = ("gzip-stream", "lz4", "zstd")
# A record's first line; WARC/0.17 and 0.18 are ClueWeb's.
WARC_VERSION = re.compile(rb"WARC/(?:1\.[01]|0\.1[78])\r\n")
_INFLATED_WARC_LINE = re.compile(rb"\nWARC/(?:1\.[01]|0\.1[78])\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*(\d{1,18})[ \t]*\r\n", re.I)
_GZIP_MAGIC_RE = re.compile(re.escape(GZIP_MAGIC))
SCAN_CHUNK = 1 << 20
MAX_WARC_HEADER = 32 << 10  # FastWARC's default header limit
_HEAD_BYTES = 1024  # enough of a gzip member to inflate its first line (Huffman tables first)
_FIRST_MEMBER_PROBE = 4 << 20  # compressed bytes of the first member read to tell members from a stream


def layout(f: BinaryIO) -> str:
    """How the file is laid out. A gzip file whose first member ends before the file
    does is read member by member (and resynchronised after damage); one whose first
    member is the whole file, runs past the probe, or is damaged after holding several
    records, is one compressed stream."""
    f.seek(0)
    head = f.read(4)
    f.seek(0)
    if head.startswith(LZ4_MAGIC):
        return "lz4"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(b"WARC"):
        return "plain"
    if not head.startswith(GZIP_MAGIC):
        return "unknown"
    inflater, read, records = zlib.decompressobj(31), 0, 0
    try:
        while not inflater.eof and read < _FIRST_MEMBER_PROBE:
            data = inflater.unconsumed_tail or f.read(1 << 16)
            if not data:
                break
            read += 0 if data is inflater.unconsumed_tail else len(data)
            if records < 2:  # capped output; only the member's end and its first records matter
                records += len(_INFLATED_WARC_LINE.findall(b"\n" + inflater.decompress(data, 1 << 20)))
            else:
                inflater.decompress(data, 1 << 20)
    except zlib.error:
        # Damage in the first member: a stream if it already held several records, else
        # members can still be found after it.
        f.seek(0)
        return "gzip-stream" if records >= 2 else "gzip-members"
    # Another member after the first (not just the whitespace some writers end with).
    more = inflater.eof and (inflater.unused_data + f.read(3)).lstrip(b" \t\r\n\x00")[:3] == GZIP_MAGIC
    f.seek(0)
    return "gzip-members" if more else "gzip-stream"


@dataclass(frozen=True, slots=True)
class RecordStarts:
    """Record starts a scan of the raw file saw. For a compressed stream the offsets are
    positions in the inflated stream, up to where it inflates, as the reader's are."""

    layout: str  # gzip-members | plain | unknown | gzip-stream | lz4 | zstd
    offsets: list[int]

    @property
    def count(self) -> int:
        return len(self.offsets)

    def within(self, start: int, end: int) -> int:
        """How many starts lie in [start, end)."""
        return bisect_left(self.offsets, end) - bisect_left(self.offsets, start)

    def seen(self, offset: int) -> bool:
        """Whether a record starts at ``offset``."""
        return self.within(offset, offset + 1) == 1

    def after(self, offset: int) -> int | None:
        """The first start after ``offset``, if any."""
        index = bisect_right(self.offsets, offset)
        return self.offsets[index] if index < len(self.offsets) else None


def scan_record_starts(open_file: Callable[[], BinaryIO]) -> RecordStarts:
    with open_file() as f:
        return scan_open_file(f)


def scan_open_file(f: BinaryIO) -> RecordStarts:
    kind = layout(f)
    if kind in STREAM_LAYOUTS:
        return RecordStarts(kind, _inflated_starts(InflatedStream(f, kind)))
    # A plain file's records start with version lines, a gzip file's with members:
    # looking for the other kind too would cost half the scan for nothing.
    markers = {"gzip-members": ("gzip",), "plain": ("warc",)}.get(kind, ("gzip", "warc"))
    return RecordStarts(kind, list(candidate_starts(f, 0, f.seek(0, 2), markers)))


def candidate_starts(f: BinaryIO, start: int, size: int, markers: tuple[str, ...] = ("gzip", "warc")) -> Iterator[int]:
    """Every offset from ``start`` on where a record starts, in order; ``markers`` says
    which kinds to look for (gzip members, WARC version lines)."""
    position = start
    while position < size:
        f.seek(position)
        # The extra bytes let a candidate near the end of the chunk be checked.
        chunk = f.read(SCAN_CHUNK + _HEAD_BYTES)
        if not chunk:
            return
        for hit in _marker_hits(chunk, SCAN_CHUNK, markers):
            if starts_record(chunk[hit : hit + _HEAD_BYTES]):
                yield position + hit
        position += SCAN_CHUNK


def starts_record(head: bytes) -> bool:
    """``head`` (bytes from a candidate offset) begins a record: a version line, or a
    gzip member whose first inflated bytes are one. Only the first bytes are inflated."""
    if head.startswith(b"WARC/"):
        return WARC_VERSION.match(head) is not None
    if not head.startswith(GZIP_MAGIC) or len(head) < 18 or head[3] & 0xE0:  # reserved flag bits must be zero
        return False
    try:
        start = zlib.decompressobj(31).decompress(head, 10)
    except zlib.error:
        return False
    return WARC_VERSION.match(start) is not None


def _marker_hits(chunk: bytes, limit: int, markers: tuple[str, ...]) -> list[int]:
    """Offsets below ``limit`` in ``chunk`` of gzip magic bytes and of ``WARC/``, sorted."""
    hits = []
    if "gzip" in markers:
        hits += [m.start() for m in _GZIP_MAGIC_RE.finditer(chunk, 0, limit + 2)]  # re beats bytes.find on 3 bytes
    if "warc" in markers:
        # Not only at a line start: a record a writer appended after a crash follows
        # whatever bytes were cut short. One quoted in a payload is told apart by the
        # reader (its record's own Content-Length holds it).
        index = chunk.find(b"WARC/", 0, limit + 4)
        while index >= 0:
            hits.append(index)
            index = chunk.find(b"WARC/", index + 1, limit + 4)
    return sorted(hits)


# --- where a record ends -----------------------------------------------------------


def record_end(f: BinaryIO, offset: int, size: int) -> int | None:
    """Where the record at ``offset`` ends if it ends where its Content-Length says (its
    block, then CRLF CRLF; a gzip member must hold whole records and nothing else);
    else None. Memory stays bounded whatever the record's size."""
    f.seek(offset)
    head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return _member_end(f, offset)
    if head != b"WARC":
        return None
    f.seek(offset)
    header = f.read(MAX_WARC_HEADER)
    header_end = header.find(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(header, 0, header_end + 2) if header_end >= 0 else None
    # A version line inside the header: a record cut at a header line ran into the next.
    if length is None or WARC_VERSION.search(header, 1, header_end + 2):
        return None
    block_end = offset + header_end + 4 + int(length.group(1))
    if block_end + 4 > size:
        return None
    f.seek(block_end)
    return block_end + 4 if f.read(4) == b"\r\n\r\n" else None


def _member_end(f: BinaryIO, offset: int) -> int | None:
    """Where the gzip member at ``offset`` ends, if it inflates whole to records that each
    end where their Content-Length says; else None."""
    f.seek(offset)
    inflater, walk, read = zlib.decompressobj(31), _RecordWalk(), 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail
            if not data:
                data = f.read(1 << 16)
                if not data:
                    return None  # cut short
                read += len(data)
            walk.feed(inflater.decompress(data, 1 << 20))
            if not walk.ok:
                return None
    except zlib.error:
        return None
    return offset + read - len(inflater.unused_data) if walk.complete else None


class _RecordWalk:
    """Checks inflated bytes, fed piece by piece, are whole WARC records back to back: a
    header up to CRLF CRLF with a Content-Length, that many bytes, CRLF CRLF. Holds at
    most one header."""

    def __init__(self):
        self.ok, self.records = True, 0
        self._state, self._buffer, self._remaining = "header", b"", 0

    @property
    def complete(self) -> bool:
        return self.ok and self.records > 0 and self._state == "header" and not self._buffer

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data) and self.ok:
            if self._state == "block":
                taken = min(self._remaining, len(data) - at)
                at += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state = "trailer"
            elif self._state == "trailer":
                taken = data[at : at + 4 - len(self._buffer)]
                at += len(taken)
                self._buffer += taken
                if len(self._buffer) == 4:
                    self.ok = self._buffer == b"\r\n\r\n"
                    self._buffer, self._state = b"", "header"
                    self.records += 1
            else:
                combined = self._buffer + data[at:]
                header_end = combined.find(b"\r\n\r\n")
                if header_end < 0:
                    self.ok = len(combined) <= MAX_WARC_HEADER
                    self._buffer = combined
                    return
                length = _CONTENT_LENGTH.search(combined, 0, header_end + 2)
                if not WARC_VERSION.match(combined) or length is None:
                    self.ok = False
                    return
                at += header_end + 4 - len(self._buffer)
                self._buffer, self._remaining, self._state = b"", int(length.group(1)), "block"
                if not self._remaining:
                    self._state = "trailer"


# --- compressed streams ------------------------------------------------------------


def _inflated_starts(stream: InflatedStream) -> list[int]:
    """Offsets of WARC version lines at line starts in an inflated stream."""
    offsets, tail, base = [], b"\n", -1  # as if a line ended just before the stream
    while chunk := stream.read(SCAN_CHUNK):
        window = tail + chunk
        # A match wholly inside the tail was counted with the previous chunk.
        offsets += [base + m.start() + 1 for m in _INFLATED_WARC_LINE.finditer(window) if m.end() > len(tail)]
        tail = window[-11:]
        base += len(window) - len(tail)
    return offsets


class InflatedStream:
    """A compressed WARC stream as a readable file of its inflated bytes: gzip (every
    member) by zlib, LZ4 and zstd by FastWARC's readers. Damage ends it: ``read`` then
    returns b"" and ``error`` says why, so what came before is read whole. Whitespace
    after the last gzip member is no damage."""

    def __init__(self, f: BinaryIO, kind: str):
        self.f = f
        self.position = 0
        self.error: str | None = None
        f.seek(0)
        self._inflater = zlib.decompressobj(31) if kind == "gzip-stream" else None
        self._reader = {"lz4": Lz4Reader, "zstd": ZstdReader}[kind](f) if self._inflater is None else None
        self._pending = b""
        self._in_member = False

    def read(self, n: int = -1) -> bytes:
        if self.error:
            return b""
        try:
            data = self._read(n if n > 0 else SCAN_CHUNK)
        except Exception as exc:  # zlib.error, EOFError, or the reader's OSError
            self.error = f"cannot inflate past {self.position}: {type(exc).__name__}: {exc}"
            return b""
        self.position += len(data)
        return data

    def _read(self, n: int) -> bytes:
        if self._reader is not None:
            return self._reader.read(n)
        while not self._pending:
            inflater = self._inflater
            assert inflater is not None  # no reader: a gzip stream
            if inflater.eof:  # the next member of a multi-member stream, if any
                chunk = inflater.unused_data or self.f.read(1 << 16)
                if not chunk:
                    return b""
                if not chunk.startswith(GZIP_MAGIC[:1]) and self._only_whitespace_left(chunk):
                    return b""  # trailing whitespace, as some writers leave
                inflater = self._inflater = zlib.decompressobj(31)
            else:
                chunk = inflater.unconsumed_tail or self.f.read(1 << 16)
                if not chunk:
                    if self._in_member:
                        raise EOFError("the stream ends inside a gzip member")
                    return b""
            # Capped, so a small member that inflates hugely cannot take the memory.
            self._pending = inflater.decompress(chunk, 1 << 20)
            self._in_member = not inflater.eof
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _only_whitespace_left(self, chunk: bytes) -> bool:
        extra = self.f.read(4096)
        self.f.seek(-len(extra), 1)
        return len(extra) < 4096 and not (chunk + extra).strip(b" \t\r\n\x00")

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        pass
