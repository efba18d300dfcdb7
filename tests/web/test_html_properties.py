"""Property tests over generated pages: parse_page raises nothing but HtmlParseError,
keeps every character of the text it is given (private-use ones too), invents none, and
gives one image per <img> outside script-like elements, counted here by a walk of our
own over the same generated structure."""

from __future__ import annotations

import html as html_escape

from hypothesis import given, settings
from hypothesis import strategies as st

from asagi_dagster.web.html import HtmlParseError, parse_page

# Text as pages have it, private-use characters (icon fonts, carrier emoji, Shift_JIS
# user-defined characters, our own mark code points) among it.
_chars = st.one_of(
    st.sampled_from("あいうえお漢字カナabcXYZ0123 。、"),
    st.characters(min_codepoint=0xE000, max_codepoint=0xE03F),
    st.characters(min_codepoint=0x100000, max_codepoint=0x10FFFD),
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
)
_words = st.text(_chars, min_size=1, max_size=12).map(str.strip).filter(bool)
_url = st.sampled_from(["/a.jpg", "b.png", "https://cdn.example.jp/c.webp", "//x.example.jp/d.gif", "e f.jpg"])


@st.composite
def _img(draw):
    attrs = {"src": draw(_url)}
    if draw(st.booleans()):
        attrs["alt"] = draw(_words)
    if draw(st.booleans()):
        attrs["data-src"] = draw(_url)
    return ("img", attrs, [])


def _element(children):
    return st.tuples(st.sampled_from(["div", "p", "span", "font", "b", "figure", "td", "li"]), st.just({}), children)


_tree = st.recursive(
    st.one_of(_words.map(lambda w: ("text", w)), _img()),
    lambda children: _element(st.lists(children, max_size=4)),
    max_leaves=25,
)


def render(node) -> str:
    kind = node[0]
    if kind == "text":
        return html_escape.escape(node[1])
    if kind == "img":
        attrs = "".join(f' {k}="{html_escape.escape(v)}"' for k, v in node[1].items())
        return f"<img{attrs}>"
    return f"<{kind}>" + "".join(render(c) for c in node[2]) + f"</{kind}>"


def texts(node) -> list[str]:
    if node[0] == "text":
        return [node[1]]
    if node[0] == "img":
        return []
    return [t for c in node[2] for t in texts(c)]


def alts(node) -> list[str]:
    if node[0] == "img":
        return [node[1].get("alt", "")]
    return [] if node[0] == "text" else [a for c in node[2] for a in alts(c)]


def images(node) -> int:
    if node[0] == "img":
        return 1
    return 0 if node[0] == "text" else sum(images(c) for c in node[2])


@settings(max_examples=300, deadline=None)
@given(body=st.lists(_tree, min_size=1, max_size=5), depth=st.integers(0, 400))
def test_every_character_and_image_is_kept(body, depth):
    # ``depth`` unclosed <font> tags around it all, as old Japanese pages have.
    page_html = "<html><head><title>題</title></head><body>" + "<font>" * depth + "".join(render(n) for n in body) + "</body></html>"
    try:
        page = parse_page(page_html, "https://www.example.jp/page.html", 10_000)
    except HtmlParseError:
        raise AssertionError("a page this shallow must parse") from None
    given_text = "".join(t for n in body for t in texts(n))
    out_text = "".join(page.text_blocks)
    for word in (t for n in body for t in texts(n)):
        for piece in word.split():
            assert piece in out_text, (piece, page.text_blocks)
    assert set(out_text) - set(" ") <= set(given_text), "characters the page does not have"
    assert len(page.images) == sum(images(n) for n in body)
    given_alts = "".join(a for n in body for a in alts(n))
    for image in page.images:
        assert image.alt is None or set(image.alt) <= set(given_alts)
        for value in (image.text_before, image.text_after):
            assert value is None or set(value) - set(" ") <= set(given_text)
