"""Charsets as browsers decode them (WHATWG Encoding Standard), with the detection that
keeps mislabelled and undeclared Japanese pages exact."""

from __future__ import annotations

import pytest

from asagi_dagster.web.charset import UndecodableError, decode_html
from tests.web.corpus import shard_around
from tests.web.test_ingest import reasons, rejections, rows, run_ingest

# The Encoding Standard's labels, per encoding, as https://encoding.spec.whatwg.org/encodings.json
# lists them (May 2026).
SPEC_LABELS = {
    "UTF-8": ("unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"),
    "IBM866": ("866", "cp866", "csibm866", "ibm866"),
    "ISO-8859-2": ("csisolatin2", "iso-8859-2", "iso-ir-101", "iso8859-2", "iso88592", "iso_8859-2", "iso_8859-2:1987", "l2", "latin2"),
    "ISO-8859-3": ("csisolatin3", "iso-8859-3", "iso-ir-109", "iso8859-3", "iso88593", "iso_8859-3", "iso_8859-3:1988", "l3", "latin3"),
    "ISO-8859-4": ("csisolatin4", "iso-8859-4", "iso-ir-110", "iso8859-4", "iso88594", "iso_8859-4", "iso_8859-4:1988", "l4", "latin4"),
    "ISO-8859-5": ("csisolatincyrillic", "cyrillic", "iso-8859-5", "iso-ir-144", "iso8859-5", "iso88595", "iso_8859-5", "iso_8859-5:1988"),
    "ISO-8859-6": (
        "arabic",
        "asmo-708",
        "csiso88596e",
        "csiso88596i",
        "csisolatinarabic",
        "ecma-114",
        "iso-8859-6",
        "iso-8859-6-e",
        "iso-8859-6-i",
        "iso-ir-127",
        "iso8859-6",
        "iso88596",
        "iso_8859-6",
        "iso_8859-6:1987",
    ),
    "ISO-8859-7": (
        "csisolatingreek",
        "ecma-118",
        "elot_928",
        "greek",
        "greek8",
        "iso-8859-7",
        "iso-ir-126",
        "iso8859-7",
        "iso88597",
        "iso_8859-7",
        "iso_8859-7:1987",
        "sun_eu_greek",
    ),
    "ISO-8859-8": (
        "csiso88598e",
        "csisolatinhebrew",
        "hebrew",
        "iso-8859-8",
        "iso-8859-8-e",
        "iso-ir-138",
        "iso8859-8",
        "iso88598",
        "iso_8859-8",
        "iso_8859-8:1988",
        "visual",
    ),
    "ISO-8859-8-I": ("csiso88598i", "iso-8859-8-i", "logical"),
    "ISO-8859-10": ("csisolatin6", "iso-8859-10", "iso-ir-157", "iso8859-10", "iso885910", "l6", "latin6"),
    "ISO-8859-13": ("iso-8859-13", "iso8859-13", "iso885913"),
    "ISO-8859-14": ("iso-8859-14", "iso8859-14", "iso885914"),
    "ISO-8859-15": ("csisolatin9", "iso-8859-15", "iso8859-15", "iso885915", "iso_8859-15", "l9"),
    "ISO-8859-16": ("iso-8859-16",),
    "KOI8-R": ("cskoi8r", "koi", "koi8", "koi8-r", "koi8_r"),
    "KOI8-U": ("koi8-ru", "koi8-u"),
    "macintosh": ("csmacintosh", "mac", "macintosh", "x-mac-roman"),
    "windows-874": ("dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620", "windows-874"),
    "windows-1250": ("cp1250", "windows-1250", "x-cp1250"),
    "windows-1251": ("cp1251", "windows-1251", "x-cp1251"),
    "windows-1252": (
        "ansi_x3.4-1968",
        "ascii",
        "cp1252",
        "cp819",
        "csisolatin1",
        "ibm819",
        "iso-8859-1",
        "iso-ir-100",
        "iso8859-1",
        "iso88591",
        "iso_8859-1",
        "iso_8859-1:1987",
        "l1",
        "latin1",
        "us-ascii",
        "windows-1252",
        "x-cp1252",
    ),
    "windows-1253": ("cp1253", "windows-1253", "x-cp1253"),
    "windows-1254": (
        "cp1254",
        "csisolatin5",
        "iso-8859-9",
        "iso-ir-148",
        "iso8859-9",
        "iso88599",
        "iso_8859-9",
        "iso_8859-9:1989",
        "l5",
        "latin5",
        "windows-1254",
        "x-cp1254",
    ),
    "windows-1255": ("cp1255", "windows-1255", "x-cp1255"),
    "windows-1256": ("cp1256", "windows-1256", "x-cp1256"),
    "windows-1257": ("cp1257", "windows-1257", "x-cp1257"),
    "windows-1258": ("cp1258", "windows-1258", "x-cp1258"),
    "x-mac-cyrillic": ("x-mac-cyrillic", "x-mac-ukrainian"),
    "GBK": ("chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312", "gb_2312-80", "gbk", "iso-ir-58", "x-gbk"),
    "gb18030": ("gb18030",),
    "Big5": ("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"),
    "EUC-JP": ("cseucpkdfmtjapanese", "euc-jp", "x-euc-jp"),
    "ISO-2022-JP": ("csiso2022jp", "iso-2022-jp"),
    "Shift_JIS": ("csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis", "sjis", "windows-31j", "x-sjis"),
    "EUC-KR": ("cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "ksc_5601", "windows-949"),
    "replacement": ("csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext", "iso-2022-kr", "replacement"),
    "UTF-16BE": ("unicodefffe", "utf-16be"),
    "UTF-16LE": ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le"),
    "x-user-defined": ("x-user-defined",),
}

# Bytes and the text the standard's index for the encoding gives them, chosen where a
# wrong codec would differ (windows-1252's 0x80 is € not U+0080, EUC-KR's 0x8141 exists
# only in windows-949, KOI8-U's 0xAE is ў, Shift_JIS 0xFBFC is the IBM extension 髙...).
SAMPLES = {
    "UTF-8": ("日本語".encode(), "日本語"),
    "IBM866": (b"\x80\xa4\xae\xbe\xc0\xc1", "Адо╛└┴"),
    "ISO-8859-2": (b"\xae\xbe\xc0\xc3\xc5\xc6", "ŽžŔĂĹĆ"),
    "ISO-8859-3": (b"\xc5\xc6\xd5\xd8\xdd\xde", "ĊĈĠĜŬŜ"),
    "ISO-8859-4": (b"\xae\xbe\xc0\xc7\xc8\xca", "ŽžĀĮČĘ"),
    "ISO-8859-5": (b"\xa4\xae\xbe\xc0\xc1\xc2", "ЄЎОРСТ"),
    "ISO-8859-6": (b"\xc1\xc2\xc3\xc4\xc5\xc6", "\u0621\u0622\u0623\u0624\u0625\u0626"),
    "ISO-8859-7": (b"\xa4\xbe\xc0\xc1\xc2\xc3", "€ΎΐΑΒΓ"),
    "ISO-8859-8": (b"\xdf\xe0\xe1\xe2\xe3\xe4", "\u2017\u05d0\u05d1\u05d2\u05d3\u05d4"),
    "ISO-8859-8-I": (b"\xdf\xe0\xe1\xe2\xe3\xe4", "\u2017\u05d0\u05d1\u05d2\u05d3\u05d4"),
    "ISO-8859-10": (b"\xa4\xae\xbe\xc0\xc7\xc8", "ĪŪūĀĮČ"),
    "ISO-8859-13": (b"\xc0\xc1\xc2\xc3\xc6\xc7", "ĄĮĀĆĘĒ"),
    "ISO-8859-14": (b"\xa4\xbe\xd0\xd7\xde\xf0", "ĊẅŴṪŶŵ"),
    "ISO-8859-15": (b"\xa4\xbe", "€Ÿ"),
    "ISO-8859-16": (b"\xa4\xae\xbe\xc3\xc5\xd0", "€źŸĂĆĐ"),
    "KOI8-R": (b"\x80\xa4\xae\xbe\xc0\xc1", "─╓╝╬юа"),
    "KOI8-U": (b"\x80\xa4\xae\xbe\xc0\xc1", "─єўЎюа"),
    "macintosh": (b"\x80\xa4\xae\xbe\xc0\xc1", "Ä§Ææ¿¡"),
    "windows-874": (b"\x80\xa4\xae\xbe\xc0\xc1", "€คฎพภม"),
    "windows-1250": (b"\x80\xbe\xc0\xc3\xc5\xc6", "€ľŔĂĹĆ"),
    "windows-1251": (b"\x80\xbe\xc0\xc1\xc2\xc3", "ЂѕАБВГ"),
    "windows-1252": (b"\x80\xe9", "€é"),
    "windows-1253": (b"\x80\xbe\xc0\xc1\xc2\xc3", "€ΎΐΑΒΓ"),
    "windows-1254": (b"\x80\xd0\xdd\xde\xf0\xfd", "€ĞİŞğı"),
    "windows-1255": (b"\x80\xa4\xc0\xc1\xc2\xc3\xca", "\u20ac\u20aa\u05b0\u05b1\u05b2\u05b3\u05ba"),
    "windows-1256": (b"\x80\xc0\xc1\xc2\xc3\xc4", "\u20ac\u06c1\u0621\u0622\u0623\u0624"),
    "windows-1257": (b"\x80\xc0\xc1\xc2\xc3\xc6", "€ĄĮĀĆĘ"),
    "windows-1258": (b"\x80\xc3\xcc\xd0\xd2\xd5", "\u20ac\u0102\u0300\u0110\u0309\u01a0"),
    "x-mac-cyrillic": (b"\x80\xa4\xae\xbe\xc0\xc1", "А§ЃЊјЅ"),
    "GBK": (b"\xd6\xd0\xce\xc4\x81\x40", "中文丂"),
    "gb18030": (b"\xd6\xd0\x81\x30\x81\x30", "中\x80"),
    "Big5": (b"\xa4\xa4\xa4\xe5\x88\x40", "中文㇀"),
    "EUC-JP": (b"\xc6\xfc\xcb\xdc\xb8\xec\xad\xa1", "日本語①"),
    "ISO-2022-JP": (b"\x1b$BF|K\\8l\x1b(B", "日本語"),
    "Shift_JIS": (b"\x93\xfa\x96\x7b\x8c\xea\x87\x40\xfb\xfc", "日本語①髙"),
    "EUC-KR": (b"\xb0\xa1\x81\x41", "가갂"),
    "UTF-16BE": ("日本語".encode("utf-16-be"), "日本語"),
    "UTF-16LE": ("日本語".encode("utf-16-le"), "日本語"),
    "x-user-defined": (b"a\x80\xff", "a\uf780\uf7ff"),
}

DECODABLE = [(name, label) for name, labels in SPEC_LABELS.items() if name != "replacement" for label in labels]


def test_the_label_list_is_the_standards():
    assert sum(len(labels) for labels in SPEC_LABELS.values()) == 228
    assert set(SAMPLES) == set(SPEC_LABELS) - {"replacement"}


@pytest.mark.parametrize(("encoding", "label"), DECODABLE, ids=[label for _, label in DECODABLE])
def test_every_label_of_the_standard_decodes_as_browsers_do(encoding, label):
    sample, expected = SAMPLES[encoding]
    decoded = decode_html(sample, f"text/html; charset={label}")
    assert (decoded.text, decoded.source, decoded.replacements) == (expected, "header", 0)
    # Labels are matched case-insensitively, quotes and spaces aside.
    assert decode_html(sample, f'text/html; charset=" {label.upper()} "').text == expected


def test_labels_python_reads_differently():
    # Python's own iso-8859-9 and euc_kr codecs would give "ÐÝÞðýþ" and fail on 0x8141.
    turkish = decode_html("<p>Türkçe ĞİŞğış</p>".encode("cp1254"), "text/html; charset=iso-8859-9")
    assert (turkish.text, turkish.charset) == ("<p>Türkçe ĞİŞğış</p>", "cp1254")
    korean = decode_html("<p>가갂 한국어</p>".encode("cp949"), "text/html; charset=windows-949")
    assert (korean.text, korean.charset) == ("<p>가갂 한국어</p>", "cp949")


@pytest.mark.parametrize("label", SPEC_LABELS["replacement"])
def test_replacement_labels_are_rejected_saying_why(label):
    page = b"<html><body><p>hello</p></body></html>"
    with pytest.raises(UndecodableError, match="replacement encoding"):
        decode_html(page, f"text/html; charset={label}")
    with pytest.raises(UndecodableError, match="replacement encoding"):
        decode_html(page.replace(b"<body>", f"<head><meta charset='{label}'></head><body>".encode()), "text/html")


def test_a_replacement_label_in_meta_is_ignored_when_the_header_declares_a_charset():
    page = "<html><head><meta charset='iso-2022-kr'></head><body>ヘッダーが優先</body></html>"
    assert decode_html(page.encode(), "text/html; charset=utf-8").text == page


@pytest.mark.parametrize(
    ("bom", "codec", "content_type"),
    [
        (b"\xef\xbb\xbf", "utf-8", "text/html; charset=windows-1252"),
        (b"\xff\xfe", "utf-16-le", "text/html; charset=windows-1252"),
        (b"\xfe\xff", "utf-16-be", "text/html; charset=koi8-r"),
    ],
)
def test_a_bom_wins_over_header_and_meta(bom, codec, content_type):
    page = "<html><head><meta charset='euc-jp'></head><body><p>Café 日本語</p></body></html>"
    decoded = decode_html(bom + page.encode(codec), content_type)
    assert (decoded.text, decoded.source, decoded.replacements) == (page, "bom", 0)


def test_a_bom_page_with_invalid_bytes_is_decoded_with_replacement():
    decoded = decode_html(b"\xef\xbb\xbf<p>Caf\xe9 ok</p>", "text/html; charset=windows-1252")
    assert (decoded.text, decoded.source, decoded.replacements) == ("<p>Caf\ufffd ok</p>", "bom", 1)


GERMAN = "<html><head><title>Größenänderung</title></head><body><p>Über die Brücke gehen wir zügig, außer bei Glätte. Schöne Grüße!</p></body></html>"


@pytest.mark.parametrize("declared", ["header", "meta"])
def test_declared_utf8_with_a_few_invalid_bytes_keeps_utf8_with_replacement(declared):
    page = GERMAN.replace("<head>", "<head><meta charset='utf-8'>") if declared == "meta" else GERMAN
    content_type = "text/html; charset=utf-8" if declared == "header" else "text/html"
    body = page.encode().replace("zügig".encode(), b"z\xfcgig")  # one stray Latin-1 byte
    decoded = decode_html(body, content_type)
    assert decoded.text == page.replace("zügig", "z\ufffdgig")
    assert (decoded.charset, decoded.source, decoded.replacements) == ("utf-8", declared, 1)


def test_replacement_count_leaves_out_the_pages_own_replacement_characters():
    body = ("<p>\ufffd is the page's own; " + GERMAN).encode().replace("zügig".encode(), b"z\xfcgig\xff")
    decoded = decode_html(body, "text/html; charset=utf-8")
    assert decoded.replacements == 2 and decoded.text.count("\ufffd") == 3


def test_declared_utf8_that_is_all_latin1_goes_to_detection():
    decoded = decode_html(GERMAN.encode("latin-1"), "text/html; charset=utf-8")
    assert (decoded.text, decoded.source, decoded.replacements) == (GERMAN, "detected", 0)


JAPANESE = (
    "<html><head><title>吾輩は猫である</title></head><body><p>吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。①髙ｶﾀｶﾅ</p></body></html>"
)
JAPANESE_EUC = JAPANESE.replace("髙", "")  # 髙 (an IBM extension) is not in JIS X 0213


@pytest.mark.parametrize(
    ("codec", "expected", "label"),
    # EUC-JP labelled ISO-8859-1 is not here: windows-1252 decodes every byte of it, so it
    # stays mojibake, as in browsers.
    [("cp932", "cp932", "utf-8"), ("euc_jis_2004", "euc_jis_2004", "utf-8"), ("cp932", "cp932", "iso-8859-1")],
)
def test_mislabelled_japanese_pages_are_detected_exactly(codec, expected, label):
    text = JAPANESE if codec == "cp932" else JAPANESE_EUC
    decoded = decode_html(text.encode(codec), f"text/html; charset={label}")
    assert (decoded.text, decoded.charset, decoded.source, decoded.replacements) == (text, expected, "detected", 0)


def test_euc_jp_labelled_shift_jis_is_detected_exactly():
    text = JAPANESE.replace("①髙ｶﾀｶﾅ", "")
    assert text.encode("euc_jp").decode("cp932", "replace").count("\ufffd")  # so the label fails
    decoded = decode_html(text.encode("euc_jp"), "text/html; charset=Shift_JIS")
    assert (decoded.text, decoded.charset, decoded.source) == (text, "euc_jis_2004", "detected")


@pytest.mark.parametrize(
    ("codec", "label", "text", "bad"),
    [
        ("cp932", "Shift_JIS", JAPANESE, b"\x85"),  # a lead byte no character uses
        ("euc_jis_2004", "EUC-JP", JAPANESE_EUC, b"\xff"),
        ("cp949", "euc-kr", "<p>한국어 페이지입니다</p>", b"\xff"),
        ("cp1252", "windows-1252", "<p>Café “quotes” and a stray byte</p>", b"\x81"),
    ],
)
def test_declared_legacy_charset_with_a_broken_byte_is_decoded_as_browsers_do(codec, label, text, bad):
    body = text.encode(codec)
    cut = body.index(b"</p>")
    broken = body[:cut] + bad + body[cut:]
    decoded = decode_html(broken, f"text/html; charset={label}")
    assert decoded.text == text.replace("</p>", "\ufffd</p>", 1)
    assert (decoded.charset, decoded.source, decoded.replacements) == (codec, "header", 1)


@pytest.mark.parametrize(("codec", "expected"), [("cp932", "cp932"), ("euc_jp", "euc_jis_2004"), ("iso2022_jp", "iso2022_jp_ext")])
def test_undeclared_japanese_decodes_exactly(codec, expected):
    text = JAPANESE if codec == "cp932" else JAPANESE.replace("①髙ｶﾀｶﾅ", "")  # not in JIS X 0208
    decoded = decode_html(text.encode(codec), "text/html")
    assert (decoded.text, decoded.charset, decoded.source, decoded.replacements) == (text, expected, "detected", 0)


def test_meta_utf16_and_x_user_defined_mean_utf8_and_windows_1252():
    # HTML: bytes that can say "utf-16" in a <meta> are ASCII, so the page is not UTF-16.
    page = "<html><head><meta charset='utf-16'></head><body>日本語です。</body></html>"
    assert len(page.encode()) % 2 == 0  # even, so UTF-16 would decode it (to nonsense)
    decoded = decode_html(page.encode(), "text/html")
    assert (decoded.text, decoded.charset, decoded.source) == (page, "utf-8", "meta")
    page = "<html><head><meta charset='x-user-defined'></head><body>Café €</body></html>"
    decoded = decode_html(page.encode("cp1252"), "text/html")
    assert (decoded.text, decoded.charset, decoded.source) == (page, "cp1252", "meta")


def test_ingest_keeps_a_utf8_page_with_a_bad_byte_and_rejects_a_replacement_label(storage, config, tmp_path):
    def pages(shard):
        shard.fetch("https://x.example.de/de.html", GERMAN.encode().replace("zügig".encode(), b"z\xfcgig"), "text/html; charset=utf-8")
        shard.fetch("https://x.example.kr/kr.html", b"<html><body>hello</body></html>", "text/html; charset=iso-2022-kr")

    manifests = run_ingest(storage, config, tmp_path, "cs.warc.gz", shard_around("cs.warc.gz", pages))
    doc = next(r for r in rows(storage, manifests["web_documents"]) if r["url"].endswith("/de.html"))
    assert (doc["html"], doc["charset"], doc["charset_source"]) == (GERMAN.replace("zügig", "z\ufffdgig"), "utf-8", "header")
    assert reasons(storage, manifests["web_documents"]).count("undecodable_html") == 1
    detail = next(r["detail"] for r in rejections(storage, manifests["web_documents"]) if r["reason"] == "undecodable_html")
    assert "iso-2022-kr" in detail and "replacement encoding" in detail
