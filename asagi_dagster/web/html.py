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
    text = _XML_DECL.sub("", text, count=1)
    try:
        root = lxml_html.document_fromstring(text)
    except (etree.ParserError, ValueError) as exc:
        raise HtmlParseError(str(exc)) from None
    title_el = root.find(".//title")
    title = _clean(title_el.text_content()) if title_el is not None else None
    base_el = root.find(".//base[@href]")
    base_url = _join(page_url, base_el.get("href")) if base_el is not None else page_url
    page = Page(title=title or None, base_url=base_url or page_url)
    _walk(root, page)
    _attach_context(page, max_context_chars)
    return page


def _walk(root, page: Page) -> None:
    buffer: list[str] = []

    def flush() -> None:
        block = _clean("".join(buffer))
        buffer.clear()
        if block:
            page.items.append(block)

    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag if isinstance(el.tag, str) else None  # comments and PIs have no str tag
        if event == "start":
            if tag is None:
                walker.skip_subtree()
                continue
            tag = tag.lower()
            if tag in _SKIP:
                walker.skip_subtree()
                continue
            if tag in _BLOCK:
                flush()
            if tag == "img" or tag == "picture":
                flush()
                page.items.append(_image_ref(el, tag, len(page.images), page.base_url))
                walker.skip_subtree()  # a picture's own <img> is part of it
                continue
            if el.text:
                buffer.append(el.text)
        else:
            if tag is not None and tag.lower() in _BLOCK:
                flush()
            if el.tail:
                buffer.append(el.tail)
    flush()


def _image_ref(el, tag: str, index: int, base_url: str) -> ImageRef:
    img = el if tag == "img" else el.find(".//img")
    attrs = img.attrib if img is not None else {}
    raw = _pick_src(attrs, [s.get("srcset") for s in el.iter("source")] if tag == "picture" else [])
    url, problem, detail = _resolve(raw, base_url)
    figure = next(el.iterancestors("figure"), None)
    caption = figure.find(".//figcaption") if figure is not None else None
    return ImageRef(
        index=index,
        url=url,
        problem=problem,
        problem_detail=detail,
        alt=attrs.get("alt"),
        title=_clean(attrs.get("title") or el.get("title") or "") or None,
        figcaption=_text_without_ruby(caption) if caption is not None else None,
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


def _resolve(raw: str | None, base_url: str) -> tuple[str | None, str | None, str | None]:
    if not raw:
        return None, "missing_src", None
    if raw.lower().startswith("data:"):
        return None, "data_uri", raw[:40]
    url = _join(base_url, raw)
    if url is None:
        return None, "invalid_url", raw[:200]
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return None, "unsupported_url_scheme", scheme
    return url, None, None


def _join(base: str, raw: str) -> str | None:
    try:
        url = urljoin(base, raw.strip())
        urlsplit(url).port  # raises on a malformed port or IPv6 literal
        return url
    except ValueError:
        return None


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


def _text_without_ruby(el) -> str | None:
    parts = []
    for node in el.iter():
        if not isinstance(node.tag, str) or node.tag in ("rt", "rp"):
            if node.tail and node is not el:
                parts.append(node.tail)
            continue
        if node.text:
            parts.append(node.text)
        if node.tail and node is not el:
            parts.append(node.tail)
    return _clean("".join(parts)) or None


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()
