"""One pass over a page in document order: text blocks and images.

The same pass feeds both image-text pairs (each image with its alt, title, figcaption
and nearest text before and after) and interleaved documents (the ordered sequence of
text blocks and images, MMC4 style).

Speed matters here (it runs on every page of every crawl), so the document-order walk
is done by lxml in C: block boundaries and image positions are marked with
private-use characters, the tree is serialized as text once, and the text is split on
the marks. Python touches only the images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urljoin, urlsplit

from lxml import etree

# Contents never shown as text: ruby readings (rt/rp) are dropped to keep the base text.
_SKIP = ("script", "style", "noscript", "template", "rt", "rp", "svg", "iframe", "object", "head", "select", "button")
_BLOCK = (
    "address article aside blockquote br dd details div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead tr ul caption"
).split()
_LAZY_SRC_ATTRS = ("data-src", "data-original", "data-lazy-src")
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>", re.I)

# U+E000..U+E002 (private use) mark images and block edges; the page's own are removed
# first. The page is handled as UTF-8 bytes up to the parse: lxml parses bytes faster
# than str, and the stored html reaches us as UTF-8 already.
_BLOCK_MARK = "\ue002"
_OUR_MARKS = re.compile("[\ue000-\ue002]".encode())
_OUR_MARKS_LEAD = "\ue000".encode()[:2]  # the UTF-8 lead bytes U+E000..U+E03F share
# Both spellings instead of re.I: case-insensitive matching is much slower in re.
_BLOCK_TAG_START = re.compile(rb"<(?=/?(?:" + "|".join(_BLOCK + [t.upper() for t in _BLOCK]).encode() + rb")[\s/>])")
_IMAGE_MARK = "\ue000"
# Plain elements (no per-node Python class lookup); the encoding overrides whatever
# charset the page declares, since the text was decoded at ingest.
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, encoding="utf-8")


class HtmlParseError(ValueError):
    pass


@dataclass(slots=True)
class ImageRef:
    index: int  # position among the page's images, in document order
    url: str | None
    problem: str | None  # rejection reason when url is None or unusable
    problem_detail: str | None
    alt: str | None
    title: str | None
    figcaption: str | None
    text_before: str | None = None
    text_after: str | None = None
    text_block: int = 0  # how many of the page's text blocks come before it (MMC4's before_text_block)


@dataclass(slots=True)
class Page:
    title: str | None
    base_url: str
    robots: str | None = None  # <meta name="robots"> directives, comma-joined
    text_blocks: list[str] = field(default_factory=list)  # in document order
    images: list[ImageRef] = field(default_factory=list)  # in document order, each placed among the blocks


def parse_page(html: str | bytes, page_url: str, max_context_chars: int) -> Page:
    """Parse decoded HTML (a str, or UTF-8 bytes); raises HtmlParseError when lxml finds
    no document."""
    data = html.encode("utf-8", "surrogatepass") if isinstance(html, str) else html
    if _OUR_MARKS_LEAD in data:  # one scan in C; the regex runs only on the rare page that needs it
        data = _OUR_MARKS.sub(b"", data)
    if data[:200].lstrip()[:5].lower() == b"<?xml":
        data = _XML_DECL.sub(b"", data, count=1)
    # A mark before each block tag, open or close, becomes a text boundary (a literal
    # replacement keeps re.sub in C).
    data = _BLOCK_TAG_START.sub(_BLOCK_MARK.encode() + b"<", data)
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise HtmlParseError(str(exc)) from None
    if root is None:
        raise HtmlParseError("Document is empty")
    page = _head(root, page_url)  # before _flatten strips <head>
    page.text_blocks, page.images = _flatten(root, page.base_url, max_context_chars)
    return page


def _head(root, page_url: str) -> Page:
    """Title, base URL and robots directives, from one walk of the tree."""
    title = base_href = None
    robots = []
    for el in root.iter("title", "base", "meta"):
        if el.tag == "meta":
            if (el.get("name") or "").lower() == "robots":
                robots.append(el.get("content") or "")
        elif el.tag == "title":
            if title is None:
                title = _text(el)
        elif base_href is None:
            base_href = el.get("href") or None
    base_url = (_join(page_url, base_href) if base_href else None) or page_url
    return Page(title=title, base_url=base_url, robots=",".join(robots) or None)


def _flatten(root, base_url: str, max_context_chars: int) -> tuple[list[str], list[ImageRef]]:
    """The page's text blocks and images in document order, each image with its context."""
    etree.strip_elements(root, *_SKIP, with_tail=False)
    base = _Base(base_url)
    images: list[ImageRef] = []
    captions: dict = {}  # img/picture element -> its figure's caption
    in_picture: set = set()
    # One walk in document order: a figure comes before the images inside it.
    for el in root.iter("img", "picture", "figure"):
        tag = el.tag
        if tag == "figure":
            caption = next(el.iter("figcaption"), None)
            if caption is not None and (text := _text(caption)):
                for image_el in el.iter("img", "picture"):
                    captions[image_el] = text
            continue
        if in_picture and el in in_picture:
            continue  # a picture's own <img> is part of the picture
        if tag == "picture":
            in_picture.update(el.iter("img"))
            image = _picture_ref(el, len(images), base)
        else:
            image = _image_ref(el, el, len(images), base)
        if captions:
            image.figcaption = captions.get(el)
        # The tail is part of the serialized text once, in document order: the n-th
        # image mark there is images[n].
        el.tail = _IMAGE_MARK + el.tail if el.tail else _IMAGE_MARK
        images.append(image)
    # Whitespace is collapsed once for the whole page (the marks are not whitespace).
    flat = _clean(etree.tostring(root, method="text", encoding="unicode", with_tail=False))
    return _text_blocks(flat, images, max_context_chars), images


def _text_blocks(flat: str, images: list[ImageRef], max_chars: int) -> list[str]:
    """The text blocks of the marked text; places each image among them and gives it the
    nearest text before and after. The n-th image mark is images[n]; the text between
    two images is split at block edges, stripped and filtered in C (str.split and map),
    so Python runs once per image, not once per block."""
    blocks: list[str] = []
    pending: list[ImageRef] = []  # images still waiting for the text after them
    for index, between in enumerate(flat.split(_IMAGE_MARK)):
        texts = [piece for piece in map(str.strip, between.split(_BLOCK_MARK)) if piece]
        if texts:
            blocks += texts
            for image in pending:
                image.text_after = texts[0][:max_chars]
            pending = []
        if index < len(images):
            image = images[index]
            image.text_before = blocks[-1][-max_chars:] if blocks else None
            image.text_block = len(blocks)
            pending.append(image)
    return blocks


def _picture_ref(picture, index: int, base: _Base) -> ImageRef:
    img = next(picture.iter("img"), None)
    srcsets = [source.get("srcset") for source in picture.iter("source")]
    return _image_ref(picture, img if img is not None else picture, index, base, srcsets)


def _image_ref(el, img, index: int, base: _Base, source_srcsets: list[str | None] = ()) -> ImageRef:
    url, problem, detail = _resolve(_pick_src(img, source_srcsets), base)
    title = _without_marks(img.get("title") or (el.get("title") if el is not img else None))
    return ImageRef(index, url, problem, detail, _without_marks(img.get("alt")), (_clean(title) or None) if title else None, None)


def _pick_src(img, source_srcsets) -> str | None:
    """The real image URL: src, unless it is a data: placeholder for a lazy-loaded image."""
    src = img.get("src")
    if src and (src := src.strip()) and src[:5].lower() != "data:":
        return src
    for name in _LAZY_SRC_ATTRS:
        lazy = (img.get(name) or "").strip()
        if lazy and lazy[:5].lower() != "data:":
            return lazy
    for srcset in [img.get("srcset"), *source_srcsets]:
        first = (srcset or "").split(",")[0].strip().split(" ")[0]
        if first and first[:5].lower() != "data:":
            return first
    return src or None  # a data: URI, reported as such


class _Base:
    """A page's base URL, split once and only if needed: most image URLs resolve without urljoin."""

    def __init__(self, url: str):
        self.url = url

    @cached_property
    def scheme(self) -> str:
        return self.origin.split(":", 1)[0]

    @cached_property
    def origin(self) -> str:
        scheme, sep, rest = self.url.partition("://")
        if sep and scheme in ("http", "https"):
            return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0].split('#', 1)[0]}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def join(self, raw: str) -> str:
        if raw.startswith(("http://", "https://")):
            return raw
        if raw.startswith("//"):
            return f"{self.scheme}:{raw}"
        if raw.startswith("/") and "/." not in raw:
            return self.origin + raw
        return urljoin(self.url, raw)


# Absolute http(s) URLs with a plain host (or IPv6 literal) and a numeric port need no
# further parsing; anything else goes through urlsplit, which rejects malformed ones.
_PLAIN_URL = re.compile(r"^https?://(?:(?:[\w-]{1,63}\.)*[\w-]{1,63}|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(?:[/?#]|$)")


def _resolve(raw: str | None, base: _Base) -> tuple[str | None, str | None, str | None]:
    if not raw:
        return None, "missing_src", None
    if raw[:5].lower() == "data:":
        return None, "data_uri", raw[:40]
    try:
        url = base.join(raw)
        plain = _PLAIN_URL.match(url)
        if plain and int(plain.group(1) or 0) <= 65535:
            return url, None, None
        parts = urlsplit(url)
        parts.port  # raises on a malformed port or IPv6 literal
    except ValueError:
        return None, "invalid_url", raw[:200]
    if parts.scheme not in ("http", "https"):
        return None, "unsupported_url_scheme", parts.scheme
    return url, None, None


def _join(base: str, raw: str) -> str | None:
    url, problem, _ = _resolve(raw.strip(), _Base(base))
    return None if problem else url


def _clean(text: str) -> str:
    return " ".join(text.split())  # str.split knows Unicode spaces (U+3000 too), in C


def _without_marks(value: str | None) -> str | None:
    """An attribute value with any block mark our tag regex put inside it removed."""
    return value.replace(_BLOCK_MARK, "") if value and _BLOCK_MARK in value else value


def _text(el) -> str | None:
    return _clean("".join(el.itertext()).replace(_BLOCK_MARK, " ")) or None
