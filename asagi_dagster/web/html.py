"""One pass over a page in document order: text blocks and images.

The same pass feeds both image-text pairs (each image with its alt, title, figcaption
and nearest text before and after) and interleaved documents (the ordered sequence of
text blocks and images, MMC4 style).

Speed matters here (it runs on every page of every crawl), so the document-order walk
is done by lxml in C: block boundaries and image positions are marked with
private-use characters the page itself does not use (see _Marks), the tree is
serialized as text once, and the text is split on the marks. Python touches only the
images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urljoin, urlsplit

from lxml import etree

# Contents never shown as text: ruby readings (rt/rp) are dropped to keep the base text.
# <noscript> is stripped too, but only after the walk: its images are the no-script
# versions of lazy-loaded ones (see _ImageWalk).
_SKIP = ("script", "style", "template", "rt", "rp", "svg", "iframe", "object", "head", "select", "button")
# Of those, the ones whose images a browser shows (an image button, an <object>'s
# fallback image): their text is still no page text, but their images are images.
_SHOWS_IMAGES = ("button", "object")
_BLOCK = (
    "address article aside blockquote br dd details div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead tr ul caption"
).split()
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>", re.I)

# Both spellings instead of re.I: case-insensitive matching is much slower in re.
_BLOCK_TAG_START = re.compile(rb"<(?=/?(?:" + "|".join(_BLOCK + [t.upper() for t in _BLOCK]).encode() + rb")[\s/>])")
# Plain elements (no per-node Python class lookup); the encoding overrides whatever
# charset the page declares, since the text was decoded at ingest. huge_tree: without
# it libxml2 silently stops building the tree past 256 levels of nesting (hundreds of
# unclosed <font> tags in old Japanese pages); with it the limit is 2048, and hitting
# it is reported in the error log (see _parse).
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, encoding="utf-8", huge_tree=True)
# Inline tags carry no text boundaries and nothing parse_page reads; a page too deep
# for libxml2 is parsed again without them (they are what old pages leave unclosed).
_INLINE = "font b i u s strike em strong span small big center a blink marquee tt sup sub nobr abbr cite q mark ins del label dfn kbd var samp code"
# A match never crosses a "<", so each try ends at the next tag and the whole
# substitution stays linear on hostile input (unclosed quotes).
_INLINE_TAG = re.compile(rb"</?(?:" + "|".join(_INLINE.split()).encode() + rb")(?=[\s/>])(?:[^<>\"']|\"[^\"<]*\"|'[^'<]*')*>", re.I)


class _Marks:
    """The characters that mark images and block edges in the serialized text.

    Private-use U+E000/U+E002 unless the page has them itself (SoftBank emoji and
    Shift_JIS user-defined characters map there), then a pair from plane 16 the page
    does not use, so no character of the page is removed or mistaken for a mark.
    """

    __slots__ = ("image", "block", "block_bytes")

    def __init__(self, image: str, block: str):
        self.image, self.block, self.block_bytes = image, block, block.encode()


_DEFAULT_MARKS = _Marks("\ue000", "\ue002")
_SPARE_MARKS = [_Marks(chr(0x10FF00 + 2 * k), chr(0x10FF01 + 2 * k)) for k in range(64)]


def _marks_for(data: bytes) -> tuple[_Marks, bytes]:
    """Marks no character of the page collides with, and the page: unchanged unless it
    uses every candidate (only a page built to do so), then without the first pair."""
    # One memchr: 0xEE leads only U+E000..U+EFFF in UTF-8, which most pages do not use
    # (a multi-byte needle is searched about 20x slower).
    if b"\xee" not in data:
        return _DEFAULT_MARKS, data
    for marks in [_DEFAULT_MARKS, *_SPARE_MARKS]:
        if marks.image.encode() not in data and marks.block.encode() not in data:
            return marks, data
    return _DEFAULT_MARKS, data.replace(b"\xee\x80\x80", b"").replace(b"\xee\x80\x82", b"")


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
    robots: str | None = None  # <meta name="robots"> directives (and "agent: ..." for <meta name="googlebot">), comma-joined
    text_blocks: list[str] = field(default_factory=list)  # in document order
    images: list[ImageRef] = field(default_factory=list)  # in document order, each placed among the blocks


def parse_page(html: str | bytes, page_url: str, max_context_chars: int) -> Page:
    """Parse decoded HTML (a str, or UTF-8 bytes); raises HtmlParseError when lxml finds
    no document or cannot parse the page whole."""
    data = html.encode("utf-8", "surrogatepass") if isinstance(html, str) else html
    marks, data = _marks_for(data)
    if data[:200].lstrip()[:5].lower() == b"<?xml":
        data = _XML_DECL.sub(b"", data, count=1)
    # A mark before each block tag, open or close, becomes a text boundary (a literal
    # replacement keeps re.sub in C).
    data = _BLOCK_TAG_START.sub(marks.block_bytes + b"<", data)
    root = _parse(data)
    page = _head(root, page_url, marks)  # before _flatten strips <head>
    page.text_blocks, page.images = _flatten(root, page.base_url, max_context_chars, marks)
    return page


def _parse(data: bytes):
    """The page's whole tree. libxml2 ends the parse at its depth limit without raising
    (everything after is lost), so a page that hits it is parsed again without inline
    tags, and rejected if that is still too deep."""
    root, limit = _parse_once(data)
    if limit:
        root, limit = _parse_once(_INLINE_TAG.sub(b"", data))
        if limit:
            raise HtmlParseError(f"nested too deeply to parse whole, even without inline tags (libxml2: {limit})")
    if root is None:
        raise HtmlParseError("Document is empty")
    return root


def _parse_once(data: bytes):
    """(root or None, the resource limit libxml2 hit or None)."""
    failure: str | None
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        root, failure = None, str(exc)
    else:
        failure = None
    for error in _PARSER.error_log:  # empty or a few entries on most pages
        if error.type_name == "ERR_RESOURCE_LIMIT" or "Excessive depth" in error.message:
            return root, error.message.partition(", use XML_PARSE_HUGE")[0].strip()  # it is in use
    if failure is not None:
        raise HtmlParseError(failure)
    return root, None


def _head(root, page_url: str, marks: _Marks) -> Page:
    """Title, base URL and robots directives, from one walk of the tree."""
    title = base_href = None
    robots = []
    for el in root.iter("title", "base", "meta"):
        if el.tag == "meta":
            name = el.get("name")
            if name and (name := name.strip().lower()) == "robots":
                robots.append(el.get("content") or "")
            elif name and name.endswith("bot"):  # one crawler's own (googlebot, GPTBot): named as X-Robots-Tag does
                robots.append(f"{name}: {el.get('content') or ''}")
        elif el.tag == "title":
            if title is None:
                title = _text(el, marks)
        elif base_href is None:
            base_href = el.get("href") or None
    base_url = (_join(page_url, base_href) if base_href else None) or page_url
    return Page(title=title, base_url=base_url, robots=",".join(robots) or None)


def _flatten(root, base_url: str, max_context_chars: int, marks: _Marks) -> tuple[list[str], list[ImageRef]]:
    """The page's text blocks and images in document order, each image with its context."""
    _keep_images_of_controls(root)
    etree.strip_elements(root, *_SKIP, with_tail=False)
    base = _Base(base_url)
    images, noscripts = _plain_images(root, base, marks)
    if images is None:
        images = _ImageWalk(base, marks).images(root)
    if noscripts:  # stripped only now: the marks of images inside one are on its tail
        etree.strip_elements(root, "noscript", with_tail=False)
    # Whitespace is collapsed once for the whole page (the marks are not whitespace).
    flat = _clean(etree.tostring(root, method="text", encoding="unicode", with_tail=False))
    return _text_blocks(flat, images, max_context_chars, marks), images


def _keep_images_of_controls(root) -> None:
    """A <button> or <object> holding an image becomes a <span> with no text of its own,
    so the strip of skipped elements that follows keeps its images (and only them)."""
    for el in list(root.iter(*_SHOWS_IMAGES)):
        if next(el.iter("img", "picture"), None) is None:
            continue
        for inner in el.iter():
            inner.text = None
            if inner is not el:
                inner.tail = None
        el.tag = "span"


def _plain_images(root, base: _Base, marks: _Marks) -> tuple[list[ImageRef] | None, bool]:
    """The images of a page where each <img> is one, and whether it may have a <noscript>.
    None instead of the images when the page has a <picture> or an <img> in a
    <noscript>, which need _ImageWalk: found in the same walk, not a second, and before
    any image is resolved or marked."""
    found: list = []  # img elements in document order
    captions: dict = {}  # img element -> its figure's caption
    noscripts = False
    # One walk in document order: a figure comes before the images inside it.
    for el in root.iter("img", "figure", "picture", "noscript"):
        tag = el.tag
        if tag == "img":
            found.append(el)
        elif tag == "figure":
            caption = next(el.iter("figcaption"), None)
            if caption is not None and (text := _text(caption, marks)):
                for image_el in el.iter("img"):
                    captions[image_el] = text
        elif tag == "picture" or next(el.iter("img"), None) is not None:
            return None, True
        else:
            noscripts = True
    images: list[ImageRef] = []
    for el in found:
        image = _image_ref(el, el, len(images), base, marks)
        if captions:
            image.figcaption = captions.get(el)
        # The tail is part of the serialized text once, in document order: the n-th
        # image mark there is images[n].
        el.tail = marks.image + el.tail if el.tail else marks.image
        images.append(image)
    return images, noscripts


class _OpenPicture:
    __slots__ = ("element", "srcsets", "claimed", "noscript")

    def __init__(self, element, noscript):
        self.element, self.srcsets, self.claimed, self.noscript = element, [], False, noscript


class _ImageWalk:
    """The images of a page with <picture> or <noscript>, from one walk with start and
    end events, so each element knows the pictures, figure and noscript around it.

    - A <picture> lends its <source> srcsets to the first <img> inside it (a nested
      picture to its own); any further <img> is an image of its own, and a picture
      without an <img> is one image by its sources.
    - A <noscript> holds what a browser without script shows, for a lazy-loaded image
      its real <img>. An image in a noscript right after an image outside one (only
      whitespace between) is that image's no-script version: no row of its own, but its URL (and
      alt) fill in when that image has no usable URL. Another noscript image is a row
      of its own, unless it repeats the previous image's URL or is a tracking pixel
      (declared 0 or 1 px wide or high).
    - The noscript is stripped before the text is serialized, so the marks of images
      inside it go on its tail.
    """

    def __init__(self, base: _Base, marks: _Marks):
        self.base, self.marks = base, marks
        self.found: list[ImageRef] = []
        self.elements: list = []  # the element each image was found at
        self.captions: list[str | None] = []  # of the open figures, inner last
        self.pictures: list[_OpenPicture] = []  # open, inner last
        self.noscript = None  # the outermost open <noscript>
        self.noscript_depth = 0
        self.filled: set[int] = set()  # images a no-script version has been matched to
        self.in_noscript: set[int] = set()  # images found inside a noscript

    def images(self, root) -> list[ImageRef]:
        tags = ("img", "picture", "source", "figure", "noscript")
        picture: _OpenPicture | None
        for event, el in etree.iterwalk(root, events=("start", "end"), tag=tags):
            tag = el.tag
            if event == "end":
                if tag == "figure":
                    self.captions.pop()
                elif tag == "noscript":
                    self.noscript_depth -= 1
                    if not self.noscript_depth:
                        self.noscript = None
                elif tag == "picture":
                    picture = self.pictures.pop()
                    if not picture.claimed:
                        self._add(el, _image_ref(el, el, 0, self.base, self.marks, picture.srcsets), picture.noscript)
            elif tag == "img":
                picture = self.pictures[-1] if self.pictures and not self.pictures[-1].claimed else None
                if picture is None:
                    self._add(el, _image_ref(el, el, 0, self.base, self.marks), self.noscript)
                else:
                    picture.claimed = True
                    image = _image_ref(picture.element, el, 0, self.base, self.marks, picture.srcsets)
                    self._add(el, image, picture.noscript)
            elif tag == "source":
                if self.pictures:
                    self.pictures[-1].srcsets.append(el.get("data-srcset") or el.get("srcset"))
            elif tag == "picture":
                self.pictures.append(_OpenPicture(el, self.noscript))
            elif tag == "figure":
                caption = next(el.iter("figcaption"), None)
                text = _text(caption, self.marks) if caption is not None else None
                self.captions.append(text or (self.captions[-1] if self.captions else None))
            else:  # noscript
                self.noscript_depth += 1
                if self.noscript is None:
                    self.noscript = el
        return self.found

    def _add(self, el, image: ImageRef, noscript) -> None:
        """Adds the image found at ``el``; ``noscript`` is the one its picture or img is in."""
        if noscript is not None and not self._is_new(el, image, noscript):
            return
        image.index = len(self.found)
        if noscript is not None:
            self.in_noscript.add(image.index)
        image.figcaption = self.captions[-1] if self.captions else None
        anchor = self.noscript if self.noscript is not None else el
        anchor.tail = self.marks.image + anchor.tail if anchor.tail else self.marks.image
        self.found.append(image)
        self.elements.append(el)

    def _is_new(self, el, image: ImageRef, noscript) -> bool:
        """Whether a noscript image is one the page does not already show."""
        previous = self._image_right_before(noscript)
        if previous is not None and previous.index not in self.filled and previous.index not in self.in_noscript:
            self.filled.add(previous.index)
            if image.url is not None and image.url != previous.url and (previous.url is None or _PLACEHOLDER_FILE.search(previous.url)):
                previous.url, previous.problem, previous.problem_detail = image.url, None, None
            if not (previous.alt and previous.alt.strip()):
                previous.alt = image.alt
            previous.title = previous.title or image.title
            return False
        if self.found and image.url is not None and self.found[-1].url == image.url:
            return False
        return not any((el.get(side) or "").strip().removesuffix("px") in ("0", "1") for side in ("width", "height"))

    def _image_right_before(self, noscript) -> ImageRef | None:
        """The last image found, if it is the noscript's previous sibling (or inside it)
        with only whitespace between them."""
        sibling = noscript.getprevious()
        if sibling is None or not self.found or (sibling.tail or "").replace(self.marks.image, "").strip():
            return None
        last = self.elements[-1]
        if last is sibling or any(ancestor is sibling for ancestor in last.iterancestors()):
            return self.found[-1]
        return None


def _text_blocks(flat: str, images: list[ImageRef], max_chars: int, marks: _Marks) -> list[str]:
    """The text blocks of the marked text; places each image among them and gives it the
    nearest text before and after. The n-th image mark is images[n]; the text between
    two images is split at block edges, stripped and filtered in C (str.split and map),
    so Python runs once per image, not once per block."""
    blocks: list[str] = []
    pending: list[ImageRef] = []  # images still waiting for the text after them
    for index, between in enumerate(flat.split(marks.image)):
        texts = [piece for piece in map(str.strip, between.split(marks.block)) if piece]
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


def _image_ref(el, img, index: int, base: _Base, marks: _Marks, source_srcsets: Sequence[str | None] = ()) -> ImageRef:
    url, problem, detail = _resolve(_pick_src(img, source_srcsets), base)
    title = _without_marks(img.get("title") or (el.get("title") if el is not img else None), marks)
    alt = _without_marks(img.get("alt"), marks)
    return ImageRef(index, url, problem, detail, alt, (_clean(title) or None) if title else None, None)


# Which URL an <img> shows. Lazy loaders copy data-src / data-lazy-src / data-original
# into src (and data-srcset into srcset) when the image scrolls into view, so those win
# over src whenever present and not a data: URI: they are what a reader of the page
# ends up seeing. Then src, unless it is empty, a data: URI, or a placeholder file
# (blank.gif, lazy_placeholder.gif, grey.png ...) while a srcset offers a real URL; then
# the first usable URL of the img's data-srcset, srcset and its <picture>'s <source>s;
# last the src as it is (a data: URI is reported as such).
_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original")
_SRC_ALTERNATIVES = frozenset((*_LAZY_SRC_ATTRS, "data-srcset", "srcset"))
_PLACEHOLDER_WORDS = "blank spacer placeholder lazy loading loader grey gray transparent pixel 1x1 dummy empty clear spc trans"
# The file name is one of the words, with at most two words before and after it
# (lazy_placeholder.gif, img-placeholder-300x200.png).
_PLACEHOLDER_FILE = re.compile(
    r"(?:^|/)(?:[a-z0-9]+[_-]){0,2}(?:" + "|".join(_PLACEHOLDER_WORDS.split()) + r")(?:[_-][a-z0-9]+){0,2}\.(?:gif|png|svg|jpe?g|webp)(?:[?#]|$)",
    re.I,
)
_SRCSET_URL = re.compile(r"[\s,]*(\S*)")


def _pick_src(img, source_srcsets=()) -> str | None:
    src = img.get("src")
    src = src.strip() if src else ""
    if not source_srcsets and _SRC_ALTERNATIVES.isdisjoint(img.keys()):
        return src or None  # a plain <img>, most of them
    for name in _LAZY_SRC_ATTRS:
        lazy = img.get(name)
        if lazy and (lazy := lazy.strip()) and lazy[:5].lower() != "data:":
            return lazy
    if src and src[:5].lower() != "data:" and not _PLACEHOLDER_FILE.search(src):
        return src
    for srcset in (img.get("data-srcset"), img.get("srcset"), *source_srcsets):
        if srcset and (url := _srcset_url(srcset)):
            return url
    return src or None


def _srcset_url(srcset: str) -> str | None:
    """The first URL in a srcset that is not a data: URI. Candidates are a URL (which
    may hold commas, as a data: URI does) and descriptors up to the next comma."""
    pos = 0
    while pos < len(srcset):
        match = _SRCSET_URL.match(srcset, pos)
        assert match is not None  # the pattern matches an empty string too
        url = match.group(1)
        if url.endswith(","):  # a URL ending in commas ends its candidate
            url, pos = url.rstrip(","), match.end()
        else:
            comma = srcset.find(",", match.end())
            pos = len(srcset) if comma < 0 else comma + 1
        if url and url[:5].lower() != "data:":
            return url
    return None


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


def _without_marks(value: str | None, marks: _Marks) -> str | None:
    """An attribute value with any block mark our tag regex put inside it removed."""
    return value.replace(marks.block, "") if value and marks.block in value else value


def _text(el, marks: _Marks) -> str | None:
    return _clean("".join(el.itertext()).replace(marks.block, " ")) or None
