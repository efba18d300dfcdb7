"""The bad-input corpus: every case is rejected with its reason, nothing crashes, the
rest of the shard is processed and rows in = rows out + rows rejected."""

from __future__ import annotations

import pytest

from asagi_dagster.query import accounting, connect
from asagi_dagster.storage import StageWriter
from asagi_dagster.web import schemas
from asagi_dagster.web.ingest import extract_pages, ingest_warc
from tests.web.corpus import GOOD_AFTER, GOOD_BEFORE, good_page, gz, raw_response, shard_around


def run_ingest(storage, settings, tmp_path, name: str, data: bytes) -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    with (
        StageWriter(storage, "web_documents", name, schemas.WEB_DOCUMENTS, 1) as docs,
        StageWriter(storage, "web_images", name, schemas.WEB_IMAGES, 1) as images,
    ):
        ingest_warc(lambda: open(path, "rb"), name, docs, images, settings.sources.web)
    with (
        StageWriter(storage, "image_text_pairs", name, schemas.IMAGE_TEXT_PAIRS, 1) as pairs,
        StageWriter(storage, "interleaved_documents", name, schemas.INTERLEAVED_DOCUMENTS, 1) as inter,
    ):
        extract_pages(storage, docs.manifest.data_url, pairs, inter, settings.sources.web.html)
    manifests = {m.asset: m for m in (docs.manifest, images.manifest, pairs.manifest, inter.manifest)}
    for manifest in manifests.values():
        with connect(storage) as con:
            check = accounting(con, manifest)
        assert check["passed"], (manifest.asset, check)
    return manifests


def rows(storage, manifest) -> list[dict]:
    return list(storage.iter_rows(storage.strip_protocol(manifest.data_url)))


def rejections(storage, manifest) -> list[dict]:
    return list(storage.iter_rows(storage.strip_protocol(manifest.rejections_url)))


def doc_urls(storage, manifests) -> set[str]:
    return {r["url"] for r in rows(storage, manifests["web_documents"])}


def assert_good_pages_survive(storage, manifests):
    assert {GOOD_BEFORE, GOOD_AFTER} <= doc_urls(storage, manifests)
    pair_pages = {r["page_url"] for r in rows(storage, manifests["image_text_pairs"])}
    assert {GOOD_BEFORE, GOOD_AFTER} <= pair_pages


def reasons(storage, manifest) -> list[str]:
    return [r["reason"] for r in rejections(storage, manifest)]


def test_truncated_gzip_member_mid_file(storage, config, tmp_path):
    members = []
    for i, url in enumerate([GOOD_BEFORE, "https://x.example.jp/cut.html", GOOD_AFTER]):
        from asagi_sample.warcs import ShardWriter

        one = ShardWriter(f"m{i}")
        one.response(url, good_page(str(i)), "text/html; charset=utf-8")
        members.append(one.getvalue()[len(ShardWriter(f"m{i}").getvalue()) :])  # drop each warcinfo
    cut = members[1][: len(members[1]) // 2]
    manifests = run_ingest(storage, config, tmp_path, "cut.warc.gz", members[0] + cut + members[2])
    assert reasons(storage, manifests["web_documents"]) == ["corrupt_warc"]
    assert_good_pages_survive(storage, manifests)


@pytest.mark.parametrize("cut", [40, 400])
def test_truncated_gzip_member_at_end_of_file(storage, config, tmp_path, cut):
    data = shard_around("end.warc.gz", lambda s: None)
    manifests = run_ingest(storage, config, tmp_path, "end.warc.gz", data[:-cut])
    # warcio either yields the cut record short (a few bytes lost) or stops at the
    # damaged member (more lost); both must be rejected, never silently dropped.
    damaged = {"truncated_record", "corrupt_warc"} & set(reasons(storage, manifests["web_documents"]))
    assert damaged
    assert doc_urls(storage, manifests) == {GOOD_BEFORE}


def test_plain_record_shorter_than_its_content_length(storage, config, tmp_path):
    data = shard_around("short.warc", lambda s: None, gzip_records=False)
    manifests = run_ingest(storage, config, tmp_path, "short.warc", data[:-30])
    assert "truncated_record" in reasons(storage, manifests["web_documents"])
    assert GOOD_BEFORE in doc_urls(storage, manifests)


@pytest.mark.parametrize("gzip_records", [True, False])
def test_broken_http_headers(storage, config, tmp_path, gzip_records):
    block = b"HTTX garbage without a status\r\nContent-Type text/html\r\n\r\n<html>x</html>"
    raw = raw_response("https://bad.example.jp/h.html", block, "broken-headers")
    data = shard_around("h.warc", lambda s: s.raw(gz(raw) if gzip_records else raw), gzip_records)
    manifests = run_ingest(storage, config, tmp_path, "h.warc", data)
    assert reasons(storage, manifests["web_documents"]).count("broken_http_headers") == 1
    assert_good_pages_survive(storage, manifests)


def test_zero_length_payload(storage, config, tmp_path):
    data = shard_around("z.warc.gz", lambda s: s.fetch("https://x.example.jp/empty.html", b"", "text/html"))
    manifests = run_ingest(storage, config, tmp_path, "z.warc.gz", data)
    assert "empty_payload" in reasons(storage, manifests["web_documents"])
    assert_good_pages_survive(storage, manifests)


def test_revisit_and_request_records(storage, config, tmp_path):
    def bad(shard):
        shard.request("https://x.example.jp/only-request.html")
        shard.revisit(GOOD_BEFORE)

    manifests = run_ingest(storage, config, tmp_path, "r.warc.gz", shard_around("r.warc.gz", bad))
    details = {(r["reason"], r["detail"]) for r in rejections(storage, manifests["web_documents"])}
    assert ("non_response_record", "revisit") in details
    assert ("non_response_record", "request") in details
    assert ("non_response_record", "warcinfo") in details
    assert_good_pages_survive(storage, manifests)


def test_non_html_content_types(storage, config, tmp_path):
    def bad(shard):
        shard.fetch("https://x.example.jp/a.pdf", b"%PDF-1.4", "application/pdf")
        shard.fetch("https://x.example.jp/a.json", b"{}", "application/json")
        shard.fetch("https://x.example.jp/untyped", b"???", None)

    manifests = run_ingest(storage, config, tmp_path, "t.warc.gz", shard_around("t.warc.gz", bad))
    details = {r["detail"] for r in rejections(storage, manifests["web_documents"]) if r["reason"] == "unsupported_content_type"}
    assert details == {"application/pdf", "application/json", "missing Content-Type"}
    assert_good_pages_survive(storage, manifests)


@pytest.mark.parametrize(
    ("codec", "expected"),
    [("cp932", "cp932"), ("euc_jp", "euc_jis_2004"), ("iso2022_jp", "iso2022_jp_ext")],
)
def test_undeclared_japanese_encodings_decode(storage, config, tmp_path, codec, expected):
    text = (
        "<html><head><title>宣言のないページ</title></head><body><p>吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。</p><img "
        "src='/a.jpg' alt='猫の写真'></body></html>"
    )
    data = shard_around("j.warc.gz", lambda s: s.fetch("https://x.example.jp/j.html", text.encode(codec), "text/html"))
    manifests = run_ingest(storage, config, tmp_path, "j.warc.gz", data)
    doc = next(r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("/j.html"))
    assert (doc["charset"], doc["charset_source"]) == (expected, "detected")
    assert doc["html"] == text
    pair = next(r for r in rows(storage, manifests["image_text_pairs"]) if r["page_url"].endswith("/j.html"))
    assert pair["alt"] == "猫の写真" and pair["page_title"] == "宣言のないページ"


def test_declared_charset_that_lies_falls_back(storage, config, tmp_path):
    text = "<html><body><p>ヘッダーはUTF-8と言っているが、中身はShift_JISです。</p></body></html>"
    data = shard_around("l.warc.gz", lambda s: s.fetch("https://x.example.jp/l.html", text.encode("cp932"), "text/html; charset=utf-8"))
    manifests = run_ingest(storage, config, tmp_path, "l.warc.gz", data)
    doc = next(r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("/l.html"))
    assert doc["charset"] == "cp932" and doc["html"] == text


def test_undecodable_html(storage, config, tmp_path):
    garbage = bytes(range(128, 256)) * 40
    data = shard_around("u.warc.gz", lambda s: s.fetch("https://x.example.jp/u.html", garbage, "text/html; charset=utf-8"))
    manifests = run_ingest(storage, config, tmp_path, "u.warc.gz", data)
    assert "undecodable_html" in reasons(storage, manifests["web_documents"])
    assert_good_pages_survive(storage, manifests)


def test_page_with_ten_thousand_images(storage, config, tmp_path):
    images = "".join(f"<img src='/i/{i}.jpg' alt='{i}'>" for i in range(10_000))
    page = f"<html><body><p>画像だらけ</p>{images}</body></html>".encode()
    data = shard_around("m.warc.gz", lambda s: s.fetch("https://x.example.jp/many.html", page, "text/html; charset=utf-8"))
    manifests = run_ingest(storage, config, tmp_path, "m.warc.gz", data)
    cap = config.sources.web.html.max_images_per_page
    many = [r for r in rows(storage, manifests["image_text_pairs"]) if r["page_url"].endswith("/many.html")]
    assert len(many) == cap
    assert reasons(storage, manifests["image_text_pairs"]).count("too_many_images_on_page") == 10_000 - cap
    assert_good_pages_survive(storage, manifests)


def test_data_uris_missing_src_and_huge_alt(storage, config, tmp_path):
    huge_alt = "あ" * 1_000_000
    page = (
        "<html><body><p>本文</p>"
        "<img src='data:image/png;base64,iVBORw0KGgo='>"
        "<img alt='src がない'>"
        f"<img src='/big-alt.jpg' alt='{huge_alt}'>"
        "<img src='data:image/gif;base64,R0lGOD' data-src='/lazy.jpg' alt='遅延読み込み'>"
        "</body></html>"
    ).encode()
    data = shard_around("d.warc.gz", lambda s: s.fetch("https://x.example.jp/d.html", page, "text/html; charset=utf-8"))
    manifests = run_ingest(storage, config, tmp_path, "d.warc.gz", data)
    got = sorted(reasons(storage, manifests["image_text_pairs"]))
    assert got == ["alt_too_long", "data_uri", "missing_src"]
    kept = [r["image_url"] for r in rows(storage, manifests["image_text_pairs"]) if r["page_url"].endswith("/d.html")]
    assert kept == ["https://x.example.jp/lazy.jpg"]
    assert_good_pages_survive(storage, manifests)


def test_duplicate_records(storage, config, tmp_path):
    def bad(shard):
        body = good_page("重複")
        shard.fetch("https://x.example.jp/dup.html", body, "text/html; charset=utf-8", key="first")
        shard.fetch("https://x.example.jp/dup.html", body, "text/html; charset=utf-8", key="second")

    manifests = run_ingest(storage, config, tmp_path, "dup.warc.gz", shard_around("dup.warc.gz", bad))
    dups = [r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("/dup.html")]
    assert len(dups) == 1
    assert reasons(storage, manifests["web_documents"]).count("duplicate_record") == 1
    assert_good_pages_survive(storage, manifests)


@pytest.mark.parametrize("content", [b"this is not a warc\nat all\n", gz(b"<html>a gzipped page</html>")])
def test_file_that_is_not_a_warc(storage, config, tmp_path, content):
    manifests = run_ingest(storage, config, tmp_path, "x.warc.gz", content)
    assert reasons(storage, manifests["web_documents"]) == ["corrupt_warc"]
    assert manifests["web_documents"].rows_out == 0


def test_empty_file(storage, config, tmp_path):
    manifests = run_ingest(storage, config, tmp_path, "empty.warc", b"")
    assert reasons(storage, manifests["web_documents"]) == ["empty_warc_file"]
    assert manifests["image_text_pairs"].rows_in == 0


def test_a_file_deleted_before_its_open_is_missing_not_a_failure(storage, config, tmp_path):
    """Gone between the step's fingerprint and the open: a rejection with the fingerprint
    left empty (the re-sync asks again if the file comes back), not a failed step."""
    path = tmp_path / "gone.warc.gz"
    path.write_bytes(shard_around("gone.warc.gz", lambda s: None))
    with (
        StageWriter(storage, "web_documents", "gone.warc.gz", schemas.WEB_DOCUMENTS, 1) as docs,
        StageWriter(storage, "web_images", "gone.warc.gz", schemas.WEB_IMAGES, 1) as images,
    ):
        docs.source = images.source = {"fingerprint": "seen-before-the-open"}
        path.unlink()
        ingest_warc(lambda: open(path, "rb"), "gone.warc.gz", docs, images, config.sources.web)
    assert reasons(storage, docs.manifest) == ["missing_warc_file"]
    assert (docs.manifest.rows_in, docs.manifest.rows_out, images.manifest.rows_in) == (1, 0, 0)
    assert docs.manifest.source["fingerprint"] == images.manifest.source["fingerprint"] == ""
    with connect(storage) as con:
        assert accounting(con, docs.manifest)["passed"]


def test_http_error_status_and_truncation_header(storage, config, tmp_path):
    def bad(shard):
        shard.fetch("https://x.example.jp/missing.html", b"<html>404</html>", "text/html", status="404 Not Found")
        shard.fetch("https://x.example.jp/cut.jpg", b"\xff\xd8\xff", "image/jpeg", warc_headers={"WARC-Truncated": "length"})

    manifests = run_ingest(storage, config, tmp_path, "s.warc.gz", shard_around("s.warc.gz", bad))
    assert "http_status" in reasons(storage, manifests["web_documents"])
    assert reasons(storage, manifests["web_images"]) == ["truncated_record"]
    assert_good_pages_survive(storage, manifests)


def test_rerun_replaces_never_duplicates(storage, config, tmp_path):
    data = shard_around("rr.warc.gz", lambda s: None)
    first = run_ingest(storage, config, tmp_path, "rr.warc.gz", data)
    second = run_ingest(storage, config, tmp_path, "rr.warc.gz", data)
    assert len(rows(storage, second["web_documents"])) == first["web_documents"].rows_out == 2
    leftovers = [p for p in storage.fs.find(storage.root_path) if ".tmp-" in p]
    assert leftovers == []


def test_interleaved_documents_keep_reading_order(storage, config, tmp_path):
    page = (
        "<html><head><meta charset='utf-8'><title>順序</title></head><body>"
        "<p>最初の段落</p><img src='/a.jpg' alt='A'><p>二番目の段落</p>"
        "<img src='data:image/gif;base64,AA'><img src='/b.jpg'></body></html>"
    ).encode()
    data = shard_around("o.warc.gz", lambda s: s.fetch("https://x.example.jp/o.html", page, "text/html; charset=utf-8"))
    manifests = run_ingest(storage, config, tmp_path, "o.warc.gz", data)
    doc = next(r for r in rows(storage, manifests["interleaved_documents"]) if r["page_url"].endswith("/o.html"))
    assert doc["text_blocks"] == ["最初の段落", "二番目の段落"]
    # Each image with the index of the text block it precedes (the data: URI is not a pair).
    assert [(i["image_url"], i["before_text_block"]) for i in doc["images"]] == [
        ("https://x.example.jp/a.jpg", 1),
        ("https://x.example.jp/b.jpg", 2),
    ]
    pair_ids = {r["pair_id"] for r in rows(storage, manifests["image_text_pairs"])}
    assert {i["pair_id"] for i in doc["images"]} <= pair_ids


@pytest.mark.parametrize("label", ["punycode", "undefined", "unicode_escape", "x-no-such-charset"])
def test_charset_labels_no_web_page_uses_are_ignored(storage, config, tmp_path, label):
    text = "<html><body><p>ラベルが変なページ</p><img src='/a.jpg' alt='写真'></body></html>"
    data = shard_around("c.warc.gz", lambda s: s.fetch("https://x.example.jp/c.html", text.encode("utf-8"), f"text/html; charset={label}"))
    manifests = run_ingest(storage, config, tmp_path, "c.warc.gz", data)
    doc = next(r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("/c.html"))
    assert (doc["charset"], doc["html"]) == ("utf-8", text)


def test_payload_over_the_cap_is_payload_too_large(storage, config, tmp_path):
    web = config.sources.web.model_copy(update={"max_html_bytes": 1000, "max_image_bytes": 1000})
    settings = config.model_copy(update={"sources": config.sources.model_copy(update={"web": web})})
    big = b"<html><body><p>" + "大".encode() * 2000 + b"</p></body></html>"
    data = shard_around("big.warc.gz", lambda s: s.fetch("https://x.example.jp/big.html", big, "text/html; charset=utf-8"))
    manifests = run_ingest(storage, settings, tmp_path, "big.warc.gz", data)
    assert "payload_too_large" in reasons(storage, manifests["web_documents"])


@pytest.mark.parametrize(
    ("meta", "headers"),
    [("<meta name='robots' content='noindex, noai'>", []), ("", [("X-Robots-Tag", "noimageai")])],
)
def test_pages_that_opt_out_of_ai_keep_nothing(storage, config, tmp_path, meta, headers):
    page = f"<html><head>{meta}</head><body><p>学習に使わないでください</p><img src='/a.jpg'><img src='/b.jpg'></body></html>"
    data = shard_around(
        "n.warc.gz",
        lambda s: s.fetch("https://x.example.jp/n.html", page.encode(), "text/html; charset=utf-8", extra_headers=headers),
    )
    manifests = run_ingest(storage, config, tmp_path, "n.warc.gz", data)
    assert reasons(storage, manifests["image_text_pairs"]) == ["page_noai", "page_noai"]
    assert reasons(storage, manifests["interleaved_documents"]) == ["page_noai"]
    assert_good_pages_survive(storage, manifests)
