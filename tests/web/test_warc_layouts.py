"""Files real writers make that are valid but unusual, and damage the first reader
version lost records on (found by review): each is read whole or rejected span by span,
and the record-start check holds."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from asagi_dagster.web.warc import CorruptRegion, ReadingNotes, WarcRecord, iter_warc
from asagi_dagster.web.warc_starts import scan_record_starts
from tests.web.test_ingest import reasons, rows
from tests.web.test_warc_damage import ingest


def record(
    i: int,
    body: bytes = b"",
    version: bytes = b"1.0",
    warc_type: bytes = b"response",
    content_type: bytes = b"application/http; msgtype=response",
    http: bool = True,
) -> bytes:
    block = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" if http else b"") + (
        body or f"<html><body><p>ページ{i}</p></body></html>".encode()
    )
    header = (
        b"WARC/"
        + version
        + b"\r\nWARC-Type: "
        + warc_type
        + b"\r\nWARC-Record-ID: <urn:uuid:rec-%d>\r\n" % i
        + b"WARC-Target-URI: https://edge.example.jp/%d.html\r\nContent-Type: " % i
        + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(block)
    )
    return header + block + b"\r\n\r\n"


def read(tmp_path, data: bytes) -> tuple[list, ReadingNotes, int]:
    path = tmp_path / "edge.warc"
    path.write_bytes(data)
    notes = ReadingNotes()
    items = list(iter_warc(lambda: open(path, "rb"), "edge.warc", 1 << 20, notes=notes))
    starts = scan_record_starts(lambda: open(path, "rb"))
    in_spans = sum(starts.within(i.offset, i.end) for i in items if isinstance(i, CorruptRegion))
    records = sum(isinstance(i, WarcRecord) for i in items)
    assert records == starts.count - in_spans - notes.embedded_starts + notes.shared_starts, (items, starts, notes)
    return items, notes, records


def ids(items) -> list[str]:
    return [i.record_id for i in items if isinstance(i, WarcRecord)]


def spans(items) -> list[CorruptRegion]:
    return [i for i in items if isinstance(i, CorruptRegion)]


def test_a_dns_record_is_rejected_alone_in_every_layout(storage, config, tmp_path):
    dns = record(1, b"edge.example.jp. 300 IN A 192.0.2.1\r\n", content_type=b"text/dns", http=False)
    parts = [record(0), dns, record(2), record(3)]
    for name, data in [
        ("plain.warc", b"".join(parts)),
        ("members.warc.gz", b"".join(gzip.compress(p) for p in parts)),
        ("stream.warc.gz", gzip.compress(b"".join(parts))),
    ]:
        manifests, _ = ingest(storage, config, tmp_path, name, data)
        assert reasons(storage, manifests["web_documents"]) == ["non_http_response"], name
        assert len(rows(storage, manifests["web_documents"])) == 3, name


def test_a_content_length_too_big_for_any_file_is_no_exception(tmp_path):
    last = record(2).replace(b"Content-Length: ", b"Content-Length: 9999999999999999")
    items, _, _ = read(tmp_path, record(0) + record(1) + last)
    assert ids(items)[:2] == ["<urn:uuid:rec-0>", "<urn:uuid:rec-1>"]


def test_an_overstated_content_length_does_not_swallow_the_records_after_it(tmp_path):
    """A writer crashed inside record 9 and appended more records: record 9 is a span,
    and the records after it are read."""
    cut = record(9, b"x" * 100_000)[:400]
    for data in (record(0) + cut + record(2) + record(3), gzip.compress(record(0)) + gzip.compress(cut) + gzip.compress(record(2)) + gzip.compress(record(3))):
        items, _, _ = read(tmp_path, data)
        assert ids(items) == ["<urn:uuid:rec-0>", "<urn:uuid:rec-2>", "<urn:uuid:rec-3>"]
        assert len(spans(items)) == 1


def test_a_record_cut_anywhere_loses_only_itself(tmp_path):
    """Cut record 1 at every length, the next record following at once: records 0 and 2
    are always read, and nothing is lost without a span (a cut at a header line made
    record 1 take record 2's body, and a cut after the version line lost it silently)."""
    one = record(1)
    for length in range(1, len(one)):
        items, _, _ = read(tmp_path, record(0) + one[:length] + record(2))
        assert "<urn:uuid:rec-0>" in ids(items) and "<urn:uuid:rec-2>" in ids(items), length
        assert ids(items).count("<urn:uuid:rec-2>") == 1, length
        whole = length >= len(one) - 4  # only the CRLF CRLF after its block is missing
        assert whole or not any(isinstance(i, WarcRecord) and i.record_id == "<urn:uuid:rec-1>" and i.payload for i in items), length


def test_several_records_in_one_gzip_member(tmp_path):
    data = gzip.compress(record(0)) + gzip.compress(record(1) + record(2)) + gzip.compress(record(3))
    items, notes, records = read(tmp_path, data)
    assert records == 4 and not spans(items) and notes.shared_starts == 1


def test_a_warc_quoted_in_a_payload_is_payload(tmp_path):
    quoted = b"<pre>\nWARC/1.0\r\nWARC-Type: response\r\n\r\n</pre>"
    for data in (record(0, quoted) + record(1), gzip.compress(record(0, quoted)) + gzip.compress(record(1))):
        items, notes, records = read(tmp_path, data)
        assert records == 2 and not spans(items)
    assert notes.embedded_starts == 0  # inside a gzip member it is compressed: no start to the scan


def test_a_highly_compressible_first_record_in_a_single_stream(tmp_path):
    data = gzip.compress(record(0, b"\0" * (2 << 20)) + record(1) + record(2))
    items, _, records = read(tmp_path, data)
    assert records == 3 and not spans(items)
    assert scan_record_starts(lambda: open(tmp_path / "edge.warc", "rb")).layout == "gzip-stream"


def test_clueweb_warc_0_18(tmp_path):
    items, _, records = read(tmp_path, b"".join(record(i, version=b"0.18") for i in range(3)))
    assert records == 3 and not spans(items)


@pytest.mark.parametrize("tail", [b"\r\n", b"\n\n", b"\0\0"])
def test_whitespace_after_the_last_record_is_no_damage(tmp_path, tail):
    for data in (record(0) + record(1) + tail, gzip.compress(record(0) + record(1)) + tail):
        items, _, records = read(tmp_path, data)
        assert records == 2 and not spans(items)


def test_a_huge_last_member_is_checked_in_bounded_memory(tmp_path):
    """The last record's member is inflated to check its length; its 200 MB of zeros
    (a few hundred KB compressed) must not be held."""
    header = b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:uuid:big>\r\nContent-Length: %d\r\n\r\n" % (200 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    big = packer.compress(header) + b"".join(packer.compress(bytes(1 << 20)) for _ in range(200)) + packer.compress(b"\r\n\r\n")
    data = gzip.compress(record(0)) + big + packer.flush()
    tracemalloc.start()
    try:
        items, _, records = read(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == 2 and not spans(items)
    assert peak < 40 << 20, peak
