"""Decoding HTML bytes as browsers do, with the detection Japanese crawls need.

Order (WHATWG Encoding Standard "decode", HTML's encoding sniffing): a BOM wins; then
the HTTP header's charset, then `<meta>`; then detection. Every label of the Encoding
Standard is known and maps to the Python codec that decodes what browsers decode
(Shift_JIS -> cp932, since Japanese pages labelled Shift_JIS use Windows-31J characters
such as ① or 髙; ISO-8859-1 -> windows-1252; EUC-KR -> cp949 ...).

Browsers decode a declared label with replacement characters where bytes are invalid.
We do the same, except where the bytes say the label is wrong, a common case in Japanese
crawls (Shift_JIS pages labelled UTF-8, EUC-JP labelled Shift_JIS):

- A declared label that decodes strictly is used.
- Declared UTF-8 that fails is kept, with U+FFFD, when the valid multi-byte sequences
  clearly outnumber the invalid ones: UTF-8 is self-checking, so that is the page's
  charset with a few bad bytes. Otherwise the label is wrong and detection decides.
- Declared legacy charsets that fail: ISO-2022-JP escapes, strict UTF-8 or kana-rich
  Japanese text win; otherwise the label is used with U+FFFD, as browsers do.
- Nothing declared, or declared UTF-8 that is mostly invalid: detection, and a page no
  charset decodes is rejected.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache

import charset_normalizer


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    charset: str  # the codec that decoded the bytes (a Python codec name, or one of _CHARMAPS)
    source: str  # header | bom | meta | detected
    replacements: int = 0  # U+FFFD inserted for invalid bytes (0: the bytes decoded exactly)


class UndecodableError(ValueError):
    pass


_REPLACEMENT = "replacement"

# The Encoding Standard's encodings, the Python codec that decodes each as browsers do, and
# their labels (https://encoding.spec.whatwg.org/encodings.json, 228 labels, May 2026).
# Checked against the standard's index files: ISO-8859-x, IBM866, KOI8-R, macintosh,
# x-mac-cyrillic and windows-1256 match exactly, and so do the double-byte codes of
# Shift_JIS (cp932) and EUC-KR (cp949). Where Python's codec differs: windows-125x/874
# leave bytes undefined that browsers map to C1 controls, and we count them invalid (the
# strictness catches Shift_JIS pages labelled ISO-8859-1, and U+FFFD is what a reader of
# the text needs anyway); cp932 turns the lone bytes 0xA0 and 0xFD-0xFF into private-use
# characters where browsers put U+FFFD; gb18030 maps 20 codes to private use where
# GB18030-2022 has vertical forms, and refuses the lone 0x80 (€ in browsers); big5hkscs
# draws 11 symbols differently and lacks 196 HKSCS-2008 characters; EUC-JP as euc_jis_2004
# maps 〜‖−¢£¬ to the JIS code points, not Windows' ～∥－￠￡￢, decodes rows 0xF9-0xFC as
# JIS X 0213 kanji where browsers have the NEC-selected IBM extensions (374 codes), lacks
# 10 NEC row-13 symbols, and reads 1,471 JIS X 0213 codes browsers refuse.
_ENCODINGS = (
    ("UTF-8", "utf-8", ("unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8")),
    ("IBM866", "cp866", ("866", "cp866", "csibm866", "ibm866")),
    ("ISO-8859-2", "iso8859_2", ("csisolatin2", "iso-8859-2", "iso-ir-101", "iso8859-2", "iso88592", "iso_8859-2", "iso_8859-2:1987", "l2", "latin2")),
    ("ISO-8859-3", "iso8859_3", ("csisolatin3", "iso-8859-3", "iso-ir-109", "iso8859-3", "iso88593", "iso_8859-3", "iso_8859-3:1988", "l3", "latin3")),
    ("ISO-8859-4", "iso8859_4", ("csisolatin4", "iso-8859-4", "iso-ir-110", "iso8859-4", "iso88594", "iso_8859-4", "iso_8859-4:1988", "l4", "latin4")),
    ("ISO-8859-5", "iso8859_5", ("csisolatincyrillic", "cyrillic", "iso-8859-5", "iso-ir-144", "iso8859-5", "iso88595", "iso_8859-5", "iso_8859-5:1988")),
    (
        "ISO-8859-6",
        "iso8859_6",
        (
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
    ),
    (
        "ISO-8859-7",
        "iso8859_7",
        (
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
    ),
    (
        "ISO-8859-8",
        "iso8859_8",
        (
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
    ),
    ("ISO-8859-8-I", "iso8859_8", ("csiso88598i", "iso-8859-8-i", "logical")),
    ("ISO-8859-10", "iso8859_10", ("csisolatin6", "iso-8859-10", "iso-ir-157", "iso8859-10", "iso885910", "l6", "latin6")),
    ("ISO-8859-13", "iso8859_13", ("iso-8859-13", "iso8859-13", "iso885913")),
    ("ISO-8859-14", "iso8859_14", ("iso-8859-14", "iso8859-14", "iso885914")),
    ("ISO-8859-15", "iso8859_15", ("csisolatin9", "iso-8859-15", "iso8859-15", "iso885915", "iso_8859-15", "l9")),
    ("ISO-8859-16", "iso8859_16", ("iso-8859-16",)),
    ("KOI8-R", "koi8_r", ("cskoi8r", "koi", "koi8", "koi8-r", "koi8_r")),
    ("KOI8-U", "koi8-ru", ("koi8-ru", "koi8-u")),
    ("macintosh", "mac_roman", ("csmacintosh", "mac", "macintosh", "x-mac-roman")),
    ("windows-874", "cp874", ("dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620", "windows-874")),
    ("windows-1250", "cp1250", ("cp1250", "windows-1250", "x-cp1250")),
    ("windows-1251", "cp1251", ("cp1251", "windows-1251", "x-cp1251")),
    (
        "windows-1252",
        "cp1252",
        (
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
    ),
    ("windows-1253", "cp1253", ("cp1253", "windows-1253", "x-cp1253")),
    (
        "windows-1254",
        "cp1254",
        (
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
    ),
    ("windows-1255", "windows-1255", ("cp1255", "windows-1255", "x-cp1255")),
    ("windows-1256", "cp1256", ("cp1256", "windows-1256", "x-cp1256")),
    ("windows-1257", "cp1257", ("cp1257", "windows-1257", "x-cp1257")),
    ("windows-1258", "cp1258", ("cp1258", "windows-1258", "x-cp1258")),
    ("x-mac-cyrillic", "mac_cyrillic", ("x-mac-cyrillic", "x-mac-ukrainian")),
    ("GBK", "gb18030", ("chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312", "gb_2312-80", "gbk", "iso-ir-58", "x-gbk")),
    ("gb18030", "gb18030", ("gb18030",)),
    ("Big5", "big5hkscs", ("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5")),
    ("EUC-JP", "euc_jis_2004", ("cseucpkdfmtjapanese", "euc-jp", "x-euc-jp")),
    ("ISO-2022-JP", "iso2022_jp_ext", ("csiso2022jp", "iso-2022-jp")),
    ("Shift_JIS", "cp932", ("csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis", "sjis", "windows-31j", "x-sjis")),
    (
        "EUC-KR",
        "cp949",
        ("cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "ksc_5601", "windows-949"),
    ),
    # Browsers decode these to a single U+FFFD (their escapes can hide markup), so a page
    # declaring one shows nothing; it is rejected rather than kept empty.
    ("replacement", _REPLACEMENT, ("csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext", "iso-2022-kr", "replacement")),
    ("UTF-16BE", "utf-16-be", ("unicodefffe", "utf-16be")),
    ("UTF-16LE", "utf-16-le", ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le")),
    ("x-user-defined", "x-user-defined", ("x-user-defined",)),
)


def _charmap(codec: str, changes: dict[int, str]) -> str:
    """A 256-entry decoding table: Python's codec with the standard's entries changed.
    U+FFFE marks bytes the table leaves undefined."""
    table = []
    for byte in range(256):
        try:
            table.append(bytes([byte]).decode(codec))
        except UnicodeDecodeError:
            table.append("\ufffe")
    for byte, char in changes.items():
        table[byte] = char
    return "".join(table)


# Single-byte encodings Python has no codec for: the standard's KOI8-U is KOI8-RU (ў, Ў
# where Python's koi8_u has box drawing), its windows-1255 defines 0xCA (Hebrew holam haser
# for vav), and x-user-defined puts the high bytes at U+F780-U+F7FF.
_CHARMAPS = {
    "koi8-ru": _charmap("koi8_u", {0xAE: "\u045e", 0xBE: "\u040e"}),
    "windows-1255": _charmap("cp1255", {0xCA: "\u05ba"}),
    "x-user-defined": "".join(chr(b if b < 0x80 else 0xF780 + b - 0x80) for b in range(256)),
}


def _canonical(codec: str) -> str:
    return codec if codec in _CHARMAPS or codec == _REPLACEMENT else codecs.lookup(codec).name


_LABELS = {label: _canonical(codec) for _, codec, labels in _ENCODINGS for label in labels}

# Labels outside the standard in Python's own spelling ("euc_kr", "latin_1", "cp949",
# and charset-normalizer's answers) mean what the standard's label of the same name means,
# or name one of the codecs above. Browsers ignore them, but a strict decode guards the
# guess. Any other Python codec (punycode, unicode_escape, undefined...) raises other
# errors or yields lone surrogates, so it counts as unknown.
_PYTHON_ONLY_CODECS = frozenset(_LABELS.values()) | {
    codecs.lookup(name).name for name in ("shift_jis_2004", "shift_jisx0213", "euc_jisx0213", "iso2022_jp", "iso2022_jp_2004")
}
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_ISO2022_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(I", b"\x1b$(D")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_BOM_PREFIXES = tuple(bom for bom, _ in _BOMS)
_META_SCAN_BYTES = 4096
_ASCII_BYTES = bytes(range(128))
# Declared UTF-8 that fails strictly is still UTF-8 when valid multi-byte characters are
# at least this many times the invalid sequences. Shift_JIS or EUC-JP text read as UTF-8
# stays below 0.4 (measured on the benchmark pages' text); a UTF-8 page with a stray
# Latin-1 byte is far above.
_UTF8_EVIDENCE = 2


@lru_cache(maxsize=256)
def codec_for(label: str | None) -> str | None:
    """The codec for a charset label ("replacement" for the standard's replacement
    labels), or None for a label browsers and we do not know."""
    if not label:
        return None
    label = label.strip().strip("\"'").strip().lower()
    codec = _LABELS.get(label)
    if codec is not None:
        return codec
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    codec = _LABELS.get(name) or _LABELS.get(name.replace("_", "-"))
    if codec is not None:
        return codec
    return name if name in _PYTHON_ONLY_CODECS else None


def header_charset(content_type: str | None) -> str | None:
    match = _HEADER_CHARSET.search(content_type or "")
    return match.group(1) if match else None


def decode_html(body: bytes, content_type: str | None) -> Decoded:
    """Decode an HTML payload or raise UndecodableError saying what was tried."""
    if body.startswith(_BOM_PREFIXES):
        return _decode_with_bom(body)
    header, header_label = _header_codec(content_type)
    if header == _REPLACEMENT:
        raise UndecodableError(f"the header declares {header_label!r}, which browsers decode as nothing (a replacement encoding)")
    if header:  # the usual page: decoded before its body is scanned for <meta>
        try:
            return Decoded(_decode(body, header), header, "header")
        except UnicodeDecodeError:
            pass
    return _decode_undeclared_or_mislabelled(body, header)


def _decode_with_bom(body: bytes) -> Decoded:
    for bom, codec in _BOMS:
        if body.startswith(bom):
            text, replaced = _decode_replacing(body, codec)
            return Decoded(text, codec, "bom", replaced)
    raise AssertionError("called without a BOM")


def _decode_undeclared_or_mislabelled(body: bytes, header: str | None) -> Decoded:
    tried = [header] if header else []
    declared = [("header", header)] if header else []
    decoded = _utf8_with_few_errors(body, header, "header") if header else None
    if decoded:
        return decoded
    meta = _meta_codec(body, header)
    if meta and meta not in tried:
        declared.append(("meta", meta))
        decoded = _strict_once(body, meta, "meta", tried) or _utf8_with_few_errors(body, meta, "meta")
        if decoded:
            return decoded
    for codec in _strong_evidence(body):
        decoded = _strict_once(body, codec, "detected", tried)
        if decoded:
            return decoded
    legacy = next(((source, codec) for source, codec in declared if codec != "utf-8"), None)
    if legacy:
        source, codec = legacy
        text, replaced = _decode_replacing(body, codec)
        return Decoded(text, codec, source, replaced)
    for codec in _guesses(body):
        decoded = _strict_once(body, codec, "detected", tried)
        if decoded:
            return decoded
    raise UndecodableError(f"no charset decodes the page (tried {', '.join(tried) or 'nothing'})")


@lru_cache(maxsize=256)
def _header_codec(content_type: str | None) -> tuple[str | None, str | None]:
    """(codec, label) of the Content-Type's charset; pages of a crawl share a few headers."""
    label = header_charset(content_type)
    return codec_for(label), label


def _meta_codec(body: bytes, header: str | None) -> str | None:
    """The codec <meta> declares, as HTML reads it; raises when it is a replacement label
    and browsers would use it (no known header label)."""
    match = _META_CHARSET.search(body[:_META_SCAN_BYTES])
    label = match.group(1).decode("ascii") if match else None
    meta = codec_for(label)
    if meta == _REPLACEMENT:
        if header is None:
            raise UndecodableError(f"<meta> declares {label!r}, which browsers decode as nothing (a replacement encoding)")
        return None  # browsers never look at <meta> when the header's label is known
    # HTML: a <meta> cannot declare UTF-16 (the bytes that say so are ASCII) or
    # x-user-defined; browsers read those as UTF-8 and windows-1252.
    if meta in _UTF16:
        return "utf-8"
    if meta == "x-user-defined":
        return "cp1252"
    return meta


def _decode(body: bytes, codec: str, errors: str = "strict") -> str:
    table = _CHARMAPS.get(codec)
    if table is not None:
        return codecs.charmap_decode(body, errors, table)[0]
    return body.decode(codec, errors)


def _decode_replacing(body: bytes, codec: str) -> tuple[str, int]:
    """The text with U+FFFD for invalid bytes, and how many were inserted (the page's own
    U+FFFD characters are not counted: "ignore" drops exactly the replaced spans)."""
    text = _decode(body, codec, "replace")
    return text, len(text) - len(_decode(body, codec, "ignore"))


def _utf8_with_few_errors(body: bytes, codec: str, source: str) -> Decoded | None:
    """Declared UTF-8 that fails strictly, decoded with U+FFFD when its valid multi-byte
    characters outnumber the invalid sequences enough to show the label is right."""
    if codec != "utf-8":
        return None
    text, replaced = _decode_replacing(body, codec)
    ascii_chars = len(body) - len(body.translate(None, _ASCII_BYTES))
    valid_multibyte = len(text) - ascii_chars - replaced
    return Decoded(text, codec, source, replaced) if valid_multibyte >= _UTF8_EVIDENCE * replaced else None


def _strict_once(body: bytes, codec: str, source: str, tried: list[str]) -> Decoded | None:
    if codec in tried:
        return None
    tried.append(codec)
    try:
        return Decoded(_decode(body, codec), codec, source)
    except UnicodeDecodeError:
        return None


def _strong_evidence(body: bytes):
    """Charsets whose strict decode is near-proof: escape sequences mean ISO-2022-JP, valid
    UTF-8 is UTF-8, and kana-rich text is the legacy Japanese codec that produced it."""
    head = body[:65536]
    if any(esc in head for esc in _ISO2022_ESCAPES):
        yield "iso2022_jp_ext"
    yield "utf-8"
    japanese = _most_japanese(head)
    if japanese:
        yield japanese


def _guesses(body: bytes):
    """Undeclared pages that nothing above decodes: generic detection, then the legacy
    Japanese codecs whatever their kana share."""
    best = charset_normalizer.from_bytes(body[:65536]).best()
    if best is not None:
        codec = codec_for(best.encoding)
        if codec and codec != _REPLACEMENT:
            yield codec
    yield "cp932"
    yield "euc_jis_2004"


_KANA = re.compile(r"[\u3040-\u30ff]")
_MIN_KANA_SHARE = 0.2


def _most_japanese(head: bytes) -> str | None:
    """cp932 and EUC-JP bytes often both decode; real Japanese text is rich in kana.

    Generic detectors confuse short EUC-JP pages with Korean, hence this check first.
    """
    best, best_share = None, _MIN_KANA_SHARE
    for codec in ("cp932", "euc_jis_2004"):
        try:
            text = codecs.getincrementaldecoder(codec)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        non_ascii = sum(1 for ch in text if ord(ch) > 127)
        if non_ascii == 0:
            continue
        share = len(_KANA.findall(text)) / non_ascii
        if share > best_share:
            best, best_share = codec, share
    return best
