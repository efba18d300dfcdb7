"""Real inputs written by other projects' public test suites (issue 17, section 7).

Two corpora, each with a SOURCE.md naming every file's origin and licence:

- ``tests/fixtures/real/``: taken from registry packages (PyPI sdists, Debian source
  packages): real pages, chardet's charset corpus, hostile images.
- ``../shared/fixtures/real-inputs/`` (or ``$ASAGI_REAL_INPUTS``): WARCs from warcio,
  jwarc and FastWARC and pages from trafilatura and readability, which exist only in
  those projects' repositories (tests/fixtures/real/SHARED-SOURCE.md says where, at
  which commit). Their tests are skipped where it is absent; the WARCs' record counts
  are here, in tests/fixtures/real/warc/expected.json.

Every expectation is computed here independently of the code under test (lxml's own
tree for image counts and text, Python's codecs for charsets, a byte-level scan for WARC
records), never copied from its output.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from lxml import etree

from asagi_dagster.storage import StageWriter
from asagi_dagster.web import schemas
from asagi_dagster.web.charset import decode_html
from asagi_dagster.web.html import HtmlParseError, parse_page
from asagi_dagster.web.ingest import ingest_warc

PROJECT = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT / "tests" / "fixtures" / "real"
SHARED = Path(os.environ.get("ASAGI_REAL_INPUTS") or PROJECT.parent / "shared" / "fixtures" / "real-inputs")


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file()) if root.is_dir() else []


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(FIXTURES if p.is_relative_to(FIXTURES) else SHARED)) for p in paths]


# --- pages -------------------------------------------------------------------------

PAGES = (
    _files(FIXTURES, "pages/**/*.html*")
    + _files(FIXTURES, "charsets/**/*.html")  # chardet's real pages (not its XML feeds)
    + _files(SHARED, "pages/**/*.html")
)
# Found by this corpus and fixed since: page -> mark, for the image-accounting test.
_IMAGE_COUNT_KNOWN: dict = {}


def _with_known(paths: list[Path], known: dict) -> list:
    return [pytest.param(p, id=i, marks=known.get(i, ())) for p, i in zip(paths, _ids(paths))]


# Elements whose contents a browser never renders as elements of the page.
_NOT_RENDERED = {"script", "template", "noscript", "style"}
# Elements whose own text is running body text.
_TEXT_ELEMENTS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "dd", "dt", "blockquote")
_LAZY_ATTRS = ("data-src", "data-lazy-src", "data-original")
_JAPANESE_RUN = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]{6,}")
_KANA = re.compile(r"[\u3040-\u30ff]")
_LXML = etree.HTMLParser(huge_tree=True, encoding="utf-8")


def _raw(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _decoded(path: Path) -> str:
    return decode_html(_raw(path), None).text


def _tree(text: str):
    return etree.fromstring(text.encode("utf-8", "surrogatepass"), _LXML)


def _rendered(el) -> bool:
    return not any(a.tag in _NOT_RENDERED for a in el.iterancestors())


def _image_elements(root) -> list:
    """What a reader sees as images: each <picture>, and each <img> outside a picture,
    none inside script, template, noscript or style. Each must become an ImageRef."""
    found = []
    for el in root.iter("img", "picture"):
        if not _rendered(el):
            continue
        if el.tag == "img" and any(a.tag == "picture" for a in el.iterancestors()):
            continue
        found.append(el)
    return found


def _image_elements_at_most(root) -> int:
    """Every <img> anywhere but script, template and style (a <noscript> one may be its
    own image or the no-script copy of a lazy one), plus pictures that hold no <img>."""
    hidden = _NOT_RENDERED - {"noscript"}
    imgs = [el for el in root.iter("img") if not any(a.tag in hidden for a in el.iterancestors())]
    empty_pictures = [el for el in root.iter("picture") if _rendered(el) and next(el.iter("img"), None) is None]
    return len(imgs) + len(empty_pictures)


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _output_text(page) -> str:
    parts = [page.title or "", *page.text_blocks]
    for image in page.images:
        parts += [image.alt or "", image.title or "", image.figcaption or ""]
    return _norm(" ".join(parts))


def _own_texts(root) -> list[str]:
    """The own text (before the first child) of body-text elements, whitespace collapsed."""
    texts = []
    for el in root.iter(*_TEXT_ELEMENTS):
        if _rendered(el) and (text := _norm(el.text)):
            texts.append(text)
    return texts


# Ruby readings are dropped by design (the base text is kept), and the title is its own field.
_NOT_BODY_TEXT = _NOT_RENDERED | {"head", "title", "rt", "rp"}


def _body_text_nodes(root) -> list[str]:
    """Every text node a reader sees in the body, whitespace collapsed."""

    def shown(el) -> bool:
        return isinstance(el.tag, str) and el.tag not in _NOT_BODY_TEXT and not any(a.tag in _NOT_BODY_TEXT for a in el.iterancestors())

    texts = []
    for el in root.iter():
        if shown(el) and (text := _norm(el.text)):
            texts.append(text)
        parent = el.getparent()
        if parent is not None and shown(parent) and (tail := _norm(el.tail)):
            texts.append(tail)
    return texts


def _parsed(path: Path):
    text = _decoded(path)
    root = _tree(text)
    try:
        page = parse_page(text, f"https://fixture.example/{path.name}", 200)
    except HtmlParseError:
        # Allowed only for a document with nothing in it.
        assert root is None or not _norm("".join(root.itertext())), f"{path.name}: HtmlParseError on a page with content"
        pytest.skip("empty document")
    assert root is not None
    return root, page


@pytest.mark.parametrize("path", _with_known(PAGES, _IMAGE_COUNT_KNOWN))
def test_page_parses_and_every_image_is_accounted(path):
    root, page = _parsed(path)
    seen = _image_elements(root)
    shown = [el for el in seen if el.tag == "picture" or _lazy_url(el) or el.get("src")]
    assert len(seen) <= len(page.images) <= _image_elements_at_most(root), (
        f"{len(page.images)} ImageRefs for {len(seen)} image elements outside noscript "
        f"(at most {_image_elements_at_most(root)} with noscript copies); image URLs the output lacks: "
        f"{_missing_sources(shown, page)[:3]}"
    )
    assert [image.index for image in page.images] == list(range(len(page.images)))


def _missing_sources(elements, page) -> list[str]:
    """For the message only: elements whose src or lazy URL no ImageRef ends with."""
    urls = [image.url or "" for image in page.images]
    missing = []
    for el in elements:
        img = el if el.tag == "img" else next(el.iter("img"), el)
        src = (_lazy_url(img) or img.get("src") or "").strip().lstrip("./")
        if not src or not any(url.endswith(src[-40:]) for url in urls):
            missing.append(f"<{el.tag}> in <{el.getparent().tag}>: {etree.tostring(el)[:100]!r}")
    return missing


@pytest.mark.parametrize("path", PAGES, ids=_ids(PAGES))
def test_body_text_with_non_ascii_survives(path):
    """Each paragraph, heading, list item and cell with non-ASCII text is in the output
    whole (a private-use character once deleted nearly all of a page's non-ASCII text)."""
    root, page = _parsed(path)
    output = _output_text(page)
    wanted = [t for t in _own_texts(root) if not t.isascii()]
    missing = [t for t in wanted if t not in output]
    assert not missing, f"{len(missing)} of {len(wanted)} texts lost, e.g. {missing[:3]}"


JAPANESE_PAGES = [p for p in PAGES if len(_KANA.findall(_decoded(p))) >= 20]


@pytest.mark.parametrize("path", JAPANESE_PAGES, ids=_ids(JAPANESE_PAGES))
def test_japanese_pages_keep_title_and_text(path):
    root, page = _parsed(path)
    title = next((_norm("".join(t.itertext())) for t in root.iter("title")), "") or None
    assert page.title == title
    runs = [run for text in _body_text_nodes(root) for run in _JAPANESE_RUN.findall(text)]
    assert runs, "a Japanese page with no Japanese body text in lxml's tree"
    output = _output_text(page)
    sample = runs[:: max(1, len(runs) // 20)]
    assert [run for run in sample if run not in output] == []


def _lazy_url(img) -> str | None:
    for name in _LAZY_ATTRS:
        value = (img.get(name) or "").strip()
        if value and not value.lower().startswith("data:"):
            return value
    return None


def _real_urls(root, base_url: str) -> list[tuple[int, str, str]]:
    """(position among _image_elements, element, URL) where the page names the real URL
    apart from src: a lazy attribute (data-src, data-lazy-src, data-original), or the
    <img> inside <noscript> of a <picture> that has no other <img>. http(s) URLs only."""
    wanted = []
    for position, el in enumerate(_image_elements(root)):
        if el.tag == "img":
            url = _lazy_url(el)
        else:
            imgs = list(el.iter("img"))
            inner = [img for img in imgs if any(a.tag == "noscript" for a in img.iterancestors())]
            url = (inner[0].get("src") or "").strip() if imgs and len(inner) == len(imgs) else None
        if url and urlsplit(urljoin(base_url, url)).scheme in ("http", "https"):
            wanted.append((position, etree.tostring(el)[:100].decode("utf-8", "replace"), urljoin(base_url, url)))
    return wanted


@pytest.mark.parametrize("path", PAGES, ids=_ids(PAGES))
def test_lazy_and_noscript_images_get_their_real_url(path):
    root, page = _parsed(path)
    if len(page.images) != len(_image_elements(root)):
        pytest.skip("images are not one to one with the elements (noscript copies counted apart)")
    wrong = [(element, url, page.images[i].url, page.images[i].problem) for i, element, url in _real_urls(root, page.base_url) if page.images[i].url != url]
    assert not wrong, f"{len(wrong)} images without their real URL, e.g. {wrong[:3]}"


# --- charsets ----------------------------------------------------------------------

CHARSET_EXPECTED = json.loads((FIXTURES / "charsets" / "expected.json").read_text(encoding="utf-8"))["files"]
JAPANESE_CHARSET_FILES = [k for k, v in CHARSET_EXPECTED.items() if v["japanese"]]
OTHER_CHARSET_FILES = [k for k, v in CHARSET_EXPECTED.items() if not v["japanese"]]


def test_charset_expectations_cover_the_files():
    on_disk = {str(p.relative_to(FIXTURES / "charsets")) for p in _files(FIXTURES, "charsets/*/*")}
    assert on_disk == set(CHARSET_EXPECTED)
    for name, entry in CHARSET_EXPECTED.items():
        (FIXTURES / "charsets" / name).read_bytes().decode(entry["codec"])  # strict: the label is right


@pytest.mark.parametrize("name", JAPANESE_CHARSET_FILES)
def test_undeclared_japanese_files_decode_exactly(name):
    raw = (FIXTURES / "charsets" / name).read_bytes()
    assert decode_html(raw, None).text == raw.decode(CHARSET_EXPECTED[name]["codec"])


@pytest.mark.parametrize("name", JAPANESE_CHARSET_FILES + OTHER_CHARSET_FILES)
def test_declared_charset_decodes_exactly(name):
    entry = CHARSET_EXPECTED[name]
    raw = (FIXTURES / "charsets" / name).read_bytes()
    assert decode_html(raw, f"text/html; charset={entry['label']}").text == raw.decode(entry["codec"])


# --- images ------------------------------------------------------------------------

IMAGES = _files(FIXTURES, "images/*/*")
_SCREEN_ALL = """
import json, resource, sys
from asagi_dagster.filters.settings import FilterSettings
from asagi_dagster.core import Rejected
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.rules import PairScreen
settings = FilterSettings()
screen = PairScreen(settings)
small_image(open(sys.argv[1], "rb").read(), 64, settings.image_safety)  # warm every import up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    outcome = []
    for step in (lambda: screen.check("縁側で昼寝をする猫", data), lambda: small_image(data, 256, settings.image_safety)):
        try:
            step()
            outcome.append("ok")
        except Rejected as rejected:
            outcome.append(rejected.reason)
    results[path] = outcome
peak_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"results": results, "peak_growth_kb": peak_growth_kb}))
"""
# What screening may answer for an image; anything else (an exception) fails the run.
_IMAGE_OUTCOMES = {"ok", "corrupt_image", "decompression_bomb", "unsupported_image_format", "image_size", "aspect_ratio", "monochrome"}


def test_hostile_images_are_screened_or_rejected_in_bounded_memory():
    """Screening (PairScreen.check) and the thumbnail decode (small_image, which skips the
    size rules so every decoder runs) on each image, in a fresh process so its peak memory
    is the corpus's alone."""
    assert len(IMAGES) >= 15
    run = subprocess.run([sys.executable, "-c", _SCREEN_ALL, *map(str, IMAGES)], capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    outcomes = {Path(path).name: outcome for path, outcome in report["results"].items()}
    unexpected = {name: o for name, o in outcomes.items() if not set(o) <= _IMAGE_OUTCOMES}
    assert not unexpected
    # Truncated and corrupt files exist in the corpus to be refused, and good ones to pass.
    assert outcomes["truncated_image.png"][1] == "corrupt_image"
    assert outcomes["broken.png"][0] == "corrupt_image"
    assert outcomes["decompression_bomb.gif"][0] == "decompression_bomb"
    assert outcomes["testimgint.jpg"] == ["ok", "ok"]
    assert report["peak_growth_kb"] < 200 * 1024, report["peak_growth_kb"]


# --- WARCs -------------------------------------------------------------------------

# The counts live here; the files, from repositories only, in the shared corpus.
WARC_EXPECTED = json.loads((FIXTURES / "warc" / "expected.json").read_text(encoding="utf-8"))["files"]
needs_shared = pytest.mark.skipif(not (SHARED / "warc").is_dir(), reason=f"no shared WARC corpus at {SHARED}")
_WARC_LINE = re.compile(rb"(?:^|\n)WARC/\d+\.\d+\r?\n")


def _gzip_members(data: bytes) -> tuple[list[bytes], str | None]:
    """The inflated gzip members in order, and what stopped the walk early, if anything."""
    members, pos = [], 0
    while pos < len(data):
        inflate = zlib.decompressobj(31)
        try:
            members.append(inflate.decompress(data[pos:]))
        except zlib.error as exc:
            return members, f"zlib error in the member at byte {pos}: {exc}"
        if not inflate.eof:
            return members, f"the gzip member at byte {pos} is cut short"
        pos = len(data) - len(inflate.unused_data)
    return members, None


def _lz4_frames(data: bytes) -> int:
    """LZ4 frames, counted by walking frame headers and block sizes (nothing is inflated)."""
    pos = frames = 0
    while pos < len(data):
        magic = struct.unpack_from("<I", data, pos)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
            continue
        assert magic == 0x184D2204, f"no LZ4 frame at byte {pos}"
        flags = data[pos + 4]
        pos += 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
        while size := struct.unpack_from("<I", data, pos)[0]:
            pos += 4 + (size & 0x7FFFFFFF) + (4 if flags & 0x10 else 0)
        pos += 4 + (4 if flags & 0x04 else 0)
        frames += 1
    return frames


def _warc_header_blocks(stream: bytes) -> int:
    """``WARC/x.y`` lines that open a header block with WARC-Type and WARC-Record-ID."""
    count = 0
    for line in _WARC_LINE.finditer(stream):
        ends = [e for e in (stream.find(b"\r\n\r\n", line.end()), stream.find(b"\n\n", line.end())) if e >= 0]
        block = stream[line.end() : min(ends) if ends else len(stream)]
        if re.search(rb"(?im)^WARC-Record-ID:", block) and re.search(rb"(?im)^WARC-Type:", block):
            count += 1
    return count


def independent_record_count(path: Path) -> int:
    data = path.read_bytes()
    if path.name.endswith(".lz4"):
        return _lz4_frames(data)  # FastWARC's LZ4 files hold one record per frame
    if data[:2] == b"\x1f\x8b":
        members, _ = _gzip_members(data)
        return _warc_header_blocks(b"".join(members))
    return _warc_header_blocks(data)


WARCS = sorted(WARC_EXPECTED)


@needs_shared
def test_warc_expectations_match_an_independent_scan():
    on_disk = {str(p.relative_to(SHARED / "warc")) for p in _files(SHARED, "warc/*/*")}
    assert on_disk == set(WARC_EXPECTED)
    for name, entry in WARC_EXPECTED.items():
        assert independent_record_count(SHARED / "warc" / name) == entry["records"], name


# web_documents rejections that stand for damaged bytes of the file, not for a record.
SPAN_REASONS = ("corrupt_warc", "empty_warc_file")


def _records_accounted(storage, manifests) -> tuple[int, int]:
    """(records as rows or rejections, rejected damaged spans) over both outputs."""
    records = spans = 0
    for manifest in manifests:
        records += manifest.rows_out
        for reason, count in manifest.rejected_by_reason.items():
            if reason in SPAN_REASONS:
                spans += count
            else:
                records += count
    return records, spans


@needs_shared
@pytest.mark.parametrize("name", WARCS)
def test_warc_ingest_accounts_every_record(name, storage, config, tmp_path):
    path = SHARED / "warc" / name
    shard = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    with (
        StageWriter(storage, "web_documents", shard, schemas.WEB_DOCUMENTS, 1) as docs,
        StageWriter(storage, "web_images", shard, schemas.WEB_IMAGES, 1) as images,
    ):
        ingest_warc(lambda: open(path, "rb"), shard, docs, images, config.sources.web)
    records, spans = _records_accounted(storage, (docs.manifest, images.manifest))
    expected = WARC_EXPECTED[name]["records"]
    detail = f"{records} records and {spans} damaged spans: {docs.manifest.rejected_by_reason} {images.manifest.rejected_by_reason}"
    if not WARC_EXPECTED[name]["all_records_readable"]:
        # A record inside a damaged span is rejected with the span, but never silently.
        assert records == expected or (records < expected and spans >= 1), detail
    else:
        assert (records, spans) == (expected, 0), detail
