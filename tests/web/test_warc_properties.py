"""Property tests over generated WARCs, whole or damaged: no exception escapes ingest,
rows in = rows out + rejected for every output, and the records in the files equal the
record starts the independent scan saw outside rejected spans."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asagi_sample.warcs import ShardWriter
from tests.web.test_ingest import run_ingest
from tests.web.test_warc_damage import starts_check

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)

_record = st.tuples(
    st.sampled_from(["page", "image", "revisit", "request"]),
    _text,
    st.sampled_from(["200 OK", "404 Not Found", "302 Found"]),
    st.sampled_from(["text/html; charset=utf-8", "text/html", "image/jpeg", "application/pdf", None]),
)

_damage = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.integers(1, 200)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=300)),
)


def build(records, gzip_records: bool) -> bytes:
    shard = ShardWriter("prop.warc", gzip=gzip_records)
    for i, (kind, text, status, content_type) in enumerate(records):
        url = f"https://prop.example.jp/{i}"
        if kind == "revisit":
            shard.revisit(url)
        elif kind == "request":
            shard.request(url)
        else:
            body = f"<html><body><p>{text}</p><img src='/{i}.jpg' alt='{text[:20]}'></body></html>".encode()
            if kind == "image":
                body = b"\xff\xd8\xff" + text.encode() + b"\xff\xd9"
            shard.fetch(url, body, content_type, status=status)
    return shard.getvalue()


def damage(data: bytes, damages) -> bytes:
    data = bytearray(data)
    for kind, where, amount in damages:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if not data:
            break
        if kind == "flip":
            data[at] ^= 1 << amount
        elif kind == "zero":
            data[at : at + amount] = bytes(len(data[at : at + amount]))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = amount
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=st.lists(_record, max_size=8), gzip_records=st.booleans(), damages=st.lists(_damage, max_size=3))
# Found by this test: a plain file cut inside the next record's first line ("WARC/1.1"
# and no line end), which FastWARC read as a record and the scan did not count.
@example(
    records=[("page", "", "200 OK", "text/html; charset=utf-8")] + [("revisit", "", "200 OK", "text/html; charset=utf-8")] * 2,
    gzip_records=False,
    damages=[("cut", 0.150390625, 0)],
)
def test_any_shard_is_accounted_for(storage, config, tmp_path, records, gzip_records, damages):
    data = damage(build(records, gzip_records), damages)
    manifests = run_ingest(storage, config, tmp_path, "prop.warc", data)  # asserts rows in = out + rejected
    if data:
        check = starts_check(storage, manifests)
        assert check["passed"], (check, damages)
