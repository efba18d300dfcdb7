"""Decoding HTML bytes: the HTTP header first, then a BOM or <meta>, then detection.

Japanese pages are often labelled "Shift_JIS" while using Windows-31J (cp932)
characters such as ① or 髙, so labels map to the superset codecs browsers use. A label
that does not decode strictly is not trusted; the next source is tried.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache
from dataclasses import dataclass

import charset_normalizer

# What browsers actually decode for these labels (WHATWG Encoding Standard).
_LABEL_CODECS = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_ISO2022_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(I", b"\x1b$(D")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_META_SCAN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    charset: str  # the Python codec that decoded the bytes
    source: str  # header | bom | meta | detected


class UndecodableError(ValueError):
    pass


# The Python codecs behind the WHATWG Encoding Standard's labels (plus the JIS X 0213
# variants browsers accept for Japanese).
_WEB_CODECS = frozenset(
    codecs.lookup(name).name
    for name in (
        "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "cp932", "shift_jis", "shift_jis_2004",
        "euc_jp", "euc_jis_2004", "iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "gb18030", "gbk", "gb2312",
        "big5", "big5hkscs", "euc_kr", "cp949", "koi8_r", "koi8_u", "mac_cyrillic", "cp866", "cp874", "tis_620",
        *(f"cp{n}" for n in range(1250, 1259)), *(f"iso8859_{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)),
    )
)


@lru_cache(maxsize=256)
def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset label, or None for an unknown label."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    name = _LABEL_CODECS.get(label, label)
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    # Python also knows codecs no web page uses (punycode, unicode_escape, undefined...);
    # those can raise other errors or yield lone surrogates, so they count as unknown.
    return codec if codec in _WEB_CODECS else None


def header_charset(content_type: str | None) -> str | None:
    match = _HEADER_CHARSET.search(content_type or "")
    return match.group(1) if match else None


def decode_html(body: bytes, content_type: str | None) -> Decoded:
    """Decode an HTML payload or raise UndecodableError saying what was tried."""
    tried: list[str] = []
    for source, codec in _candidates(body, content_type):
        if codec in tried:
            continue
        tried.append(codec)
        try:
            return Decoded(body.decode(codec), codec, source)
        except (UnicodeError, LookupError):
            continue
    raise UndecodableError(f"no charset decodes the page (tried {', '.join(tried) or 'nothing'})")


def _candidates(body: bytes, content_type: str | None):
    declared = codec_for(header_charset(content_type))
    if declared:
        yield "header", declared
    for bom, codec in _BOMS:
        if body.startswith(bom):
            yield "bom", codec
    meta = _META_CHARSET.search(body[:_META_SCAN_BYTES])
    meta_codec = codec_for(meta.group(1).decode("ascii", "replace")) if meta else None
    if meta_codec:
        yield "meta", meta_codec
    yield from _detect(body)


def _detect(body: bytes):
    """Undeclared pages: escape sequences mean ISO-2022-JP, valid UTF-8 is UTF-8, then the
    legacy Japanese codec whose text is most kana-rich, then generic detection."""
    head = body[:65536]
    if any(esc in head for esc in _ISO2022_ESCAPES):
        yield "detected", "iso2022_jp_ext"
    yield "detected", "utf-8"
    japanese = _most_japanese(head)
    if japanese:
        yield "detected", japanese
    best = charset_normalizer.from_bytes(head).best()
    if best is not None:
        codec = codec_for(best.encoding)
        if codec:
            yield "detected", codec
    yield "detected", "cp932"
    yield "detected", "euc_jis_2004"


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
