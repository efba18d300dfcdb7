from asagi_dagster.web.html import ImageRef, parse_page

PAGE = """<!DOCTYPE html><html><head><title> 図鑑 </title><base href="https://cdn.example.jp/base/"></head>
<body><h1>見出し</h1>
<p>前の<ruby>漢字<rp>(</rp><rt>かんじ</rt><rp>)</rp></ruby>テキスト</p>
<figure><img src="rel.jpg" alt="相対" title="題"><figcaption>説明：<ruby>馬<rt>うま</rt></ruby></figcaption></figure>
<p>間の文</p>
<img src="//other.example.jp/proto.png"><img src="/abs.png">
<picture><source srcset="/pic.webp 1x, /pic2.webp 2x"><img src=""></picture>
<script>var x = "<img src='no.jpg'>";</script><!-- <img src="comment.jpg"> -->
<p>最後の文</p></body></html>"""


def images(page) -> list[ImageRef]:
    return page.images


def test_urls_resolve_against_base_href_relative_and_protocol_relative():
    page = parse_page(PAGE, "https://www.example.jp/page.html", 200)
    assert [i.url for i in images(page)] == [
        "https://cdn.example.jp/base/rel.jpg",
        "https://other.example.jp/proto.png",
        "https://cdn.example.jp/abs.png",
        "https://cdn.example.jp/pic.webp",
    ]


def test_text_context_keeps_ruby_base_text_and_document_order():
    page = parse_page(PAGE, "https://www.example.jp/page.html", 200)
    first = images(page)[0]
    assert page.title == "図鑑"
    assert (first.alt, first.title, first.figcaption) == ("相対", "題", "説明：馬")
    assert first.text_before == "前の漢字テキスト"
    assert first.text_after == "説明：馬"
    assert images(page)[1].text_before == "間の文"
    assert images(page)[3].text_after == "最後の文"
    assert page.text_blocks == ["見出し", "前の漢字テキスト", "説明：馬", "間の文", "最後の文"]
    # MMC4 placement: the number of text blocks before each image
    assert [i.text_block for i in images(page)] == [2, 4, 4, 4]


def test_script_and_comment_content_is_not_an_image():
    page = parse_page(PAGE, "https://www.example.jp/page.html", 200)
    assert all("no.jpg" not in (i.url or "") and "comment" not in (i.url or "") for i in images(page))


def test_context_is_capped():
    page = parse_page("<p>" + "あ" * 50 + "</p><img src='a.jpg'><p>" + "い" * 50 + "</p>", "https://x.jp/", 10)
    image = images(page)[0]
    assert image.text_before == "あ" * 10 and image.text_after == "い" * 10


def test_broken_markup_still_yields_images():
    broken = "<html><body><div><p>未閉じ<b>太字<i>斜体</b></i><table><tr><td><img src=/a.jpg alt=店内 ><td>説明"
    page = parse_page(broken, "http://shop.example.jp/x/", 100)
    assert [(i.url, i.alt, i.text_before, i.text_after) for i in images(page)] == [
        ("http://shop.example.jp/a.jpg", "店内", "未閉じ太字斜体", "説明")
    ]


def test_unusable_sources_get_reasons():
    html = "<img src='data:image/png;base64,AA'><img><img src='javascript:x()'><img src='http://[::1:bad/x'>"
    page = parse_page(html, "https://x.jp/", 100)
    assert [i.problem for i in images(page)] == ["data_uri", "missing_src", "unsupported_url_scheme", "invalid_url"]


def test_xml_declaration_and_empty_document():
    import pytest

    from asagi_dagster.web.html import HtmlParseError

    page = parse_page('<?xml version="1.0" encoding="Shift_JIS"?><html><body><img src="a.png"></body></html>', "https://x.jp/", 10)
    assert images(page)[0].url == "https://x.jp/a.png"
    with pytest.raises(HtmlParseError):
        parse_page("   ", "https://x.jp/", 10)
