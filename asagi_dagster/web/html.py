"""One pass over a page's DOM in document order: text blocks and images.

The same pass feeds both image-text pairs (each image with its alt, title, figcaption
and nearest text before and after) and interleaved documents (the ordered sequence of
text blocks and images, MMC4 style).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from lxml import etree
from lxml import html as lxml_html

# Contents never shown as text: ruby readings (rt/rp) are dropped to keep the base text.
_SKIP = frozenset({"script", "style", "noscript", "template", "rt", "rp", "svg", "iframe", "object", "head", "select", "button"})
_BLOCK = frozenset(
    "address article aside blockquote br dd details div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead tr ul caption".split()
)
_LAZY_SRC_ATTRS = ("data-src", "data-original", "data-lazy-src")
_WS = re.compile(r"\s+")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)


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


@dataclass(slots=True)
class Page:
    title: str | None
    base_url: str
    items: list[str | ImageRef] = field(default_factory=list)  # text blocks and images in order

    @property
    def images(self) -> list[ImageRef]:
        return [item for item in self.items if isinstance(item, ImageRef)]


def parse_page(text: str, page_url: str, max_context_chars: int) -> Page:
    """Parse decoded HTML; raises HtmlParseError when lxml finds no document."""
    text = _OUR_MARKS.sub("", _XML_DECL.sub("", text, count=1))
    try:
        root = lxml_html.document_fromstring(text)
    except (etree.ParserError, ValueError) as exc:
        raise HtmlParseError(str(exc)) from None
    title_el = root.find(".//title")
    title = _clean(title_el.text_content()) if title_el is not None else None
    base_el = root.find(".//base[@href]")
    base_url = (_join(page_url, base_el.get("href")) if base_el is not None else None) or page_url
    page = Page(title=title or None, base_url=base_url)
    page.items = _flatten(root, base_url)
    _attach_context(page, max_context_chars)
    return page


# Private-use characters mark block boundaries and image positions in the flattened
# text, so lxml's C serializer does the document-order walk instead of Python.
_BLOCK_MARK = "\ue002"
_OUR_MARKS = re.compile("[\ue000-\ue002]")  # the page's own, if any, must not pass for ours
_SPLIT = re.compile("\ue002|\ue000(\\d+)\ue001")


def _flatten(root, base_url: str) -> list[str | ImageRef]:
    etree.strip_elements(root, *_SKIP, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    base = _Base(base_url)
    captions = _figure_captions(root)
    images = []
    for el in root.xpath("//picture | //img[not(ancestor::picture)]"):  # document order
        images.append(_image_ref(el, len(images), base, captions.get(el)))
        el.tail = f"\ue000{len(images) - 1}\ue001{el.tail or ''}"
    for el in root.iter(*_BLOCK):
        el.text = _BLOCK_MARK + (el.text or "")
        el.tail = _BLOCK_MARK + (el.tail or "")
    flat = _WS.sub(" ", etree.tostring(root, method="text", encoding="unicode", with_tail=False))
    items: list[str | ImageRef] = []
    # re.split with one group alternates: text, group (image index or None), text, ...
    for i, piece in enumerate(_SPLIT.split(flat)):
        if i % 2:
            if piece is not None:
                items.append(images[int(piece)])
        else:
            block = piece.strip()
            if block:
                items.append(block)
    return items


def _figure_captions(root) -> dict:
    """Image element -> the text of its figure's figcaption."""
    captions = {}
    for figure in root.iter("figure"):
        caption = figure.find(".//figcaption")
        text = (_clean(caption.text_content()) or None) if caption is not None else None
        if text:
            for el in figure.iter("img", "picture"):
                captions[el] = text
    return captions


def _image_ref(el, index: int, base: _Base, figcaption: str | None) -> ImageRef:
    picture = el.tag == "picture"
    img = el.find(".//img") if picture else el
    attrs = img.attrib if img is not None else {}
    raw = _pick_src(attrs, [s.get("srcset") for s in el.iter("source")] if picture else [])
    url, problem, detail = _resolve(raw, base)
    title = attrs.get("title") or el.get("title")
    return ImageRef(
        index=index,
        url=url,
        problem=problem,
        problem_detail=detail,
        alt=attrs.get("alt"),
        title=(_clean(title) or None) if title else None,
        figcaption=figcaption,
    )


def _pick_src(attrs, source_srcsets: list[str | None]) -> str | None:
    """The real image URL: src, unless it is a data: placeholder for a lazy-loaded image."""
    src = (attrs.get("src") or "").strip()
    if src and not src.lower().startswith("data:"):
        return src
    for name in _LAZY_SRC_ATTRS:
        lazy = (attrs.get(name) or "").strip()
        if lazy and not lazy.lower().startswith("data:"):
            return lazy
    for srcset in [attrs.get("srcset"), *source_srcsets]:
        first = (srcset or "").split(",")[0].strip().split(" ")[0]
        if first and not first.lower().startswith("data:"):
            return first
    return src or None  # a data: URI, reported as such


class _Base:
    """A page's base URL, split once: most image URLs resolve without urljoin."""

    def __init__(self, url: str):
        self.url = url
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.origin = f"{parts.scheme}://{parts.netloc}"

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
_PLAIN_URL = re.compile(r"^https?://(?:[\w.~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:[/?#]|$)")


def _resolve(raw: str | None, base: _Base) -> tuple[str | None, str | None, str | None]:
    if not raw:
        return None, "missing_src", None
    if raw[:5].lower() == "data:":
        return None, "data_uri", raw[:40]
    try:
        url = base.join(raw)
        if _PLAIN_URL.match(url):
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


def _attach_context(page: Page, max_chars: int) -> None:
    last_text: str | None = None
    pending: list[ImageRef] = []
    for item in page.items:
        if isinstance(item, ImageRef):
            item.text_before = last_text[-max_chars:] if last_text else None
            pending.append(item)
        else:
            for image in pending:
                image.text_after = item[:max_chars]
            pending.clear()
            last_text = item


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()
