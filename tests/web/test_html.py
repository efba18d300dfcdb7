import pytest

from asagi_dagster.web.html import HtmlParseError, ImageRef, parse_page

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
    assert [(i.url, i.alt, i.text_before, i.text_after) for i in images(page)] == [("http://shop.example.jp/a.jpg", "店内", "未閉じ太字斜体", "説明")]


def test_unusable_sources_get_reasons():
    html = "<img src='data:image/png;base64,AA'><img><img src='javascript:x()'><img src='http://[::1:bad/x'>"
    page = parse_page(html, "https://x.jp/", 100)
    assert [i.problem for i in images(page)] == ["data_uri", "missing_src", "unsupported_url_scheme", "invalid_url"]


def test_xml_declaration_and_empty_document():
    page = parse_page('<?xml version="1.0" encoding="Shift_JIS"?><html><body><img src="a.png"></body></html>', "https://x.jp/", 10)
    assert images(page)[0].url == "https://x.jp/a.png"
    with pytest.raises(HtmlParseError):
        parse_page("   ", "https://x.jp/", 10)


# --- private-use characters: carrier emoji, icon fonts, Shift_JIS user-defined characters

# U+E63E (DoCoMo sun), U+E001/U+E002 (SoftBank boy/girl), U+E003, U+F8F0 (icon fonts) and
# U+E000, which cp932 decodes the first user-defined character F040 to.
PUA = "\ue63e\ue001\ue002\ue003\uf8f0\ue000"
GAIJI = b"\xf0\x40".decode("cp932")  # U+E000


def test_private_use_characters_keep_every_character_of_the_page():
    html = (
        f"<html><head><title>晴れ{PUA}の日</title></head><body>"
        f"<p>前の段落{PUA}です</p>"
        f"<figure><img src='a.jpg' alt='猫{PUA}の写真' title='題{PUA}'><figcaption>説明{PUA}文</figcaption></figure>"
        f"<p>後の段落{GAIJI}です</p><img src='b.jpg' alt='犬{GAIJI}'><div>最後{PUA}</div></body></html>"
    )
    for given in (html, html.encode("utf-8")):
        page = parse_page(given, "https://x.jp/", 200)
        assert page.title == f"晴れ{PUA}の日"
        assert page.text_blocks == [f"前の段落{PUA}です", f"説明{PUA}文", f"後の段落{GAIJI}です", f"最後{PUA}"]
        first, second = images(page)
        assert (first.alt, first.title, first.figcaption) == (f"猫{PUA}の写真", f"題{PUA}", f"説明{PUA}文")
        assert (first.text_before, first.text_after, first.text_block) == (f"前の段落{PUA}です", f"説明{PUA}文", 1)
        assert (second.url, second.alt, second.text_before, second.text_after) == ("https://x.jp/b.jpg", f"犬{GAIJI}", f"後の段落{GAIJI}です", f"最後{PUA}")


def test_one_carrier_emoji_keeps_the_rest_of_the_page():
    # One SoftBank emoji (U+E00E, thumbs up) used to delete every byte 0x80-0xEE of the page.
    mobile_page = "<title>お知らせ\ue00e</title><p>本日は晴天なり。</p><img src='x.png' alt='ロゴ'><p>以上です。</p>"
    page = parse_page(mobile_page.encode("utf-8"), "https://x.jp/", 200)
    assert page.title == "お知らせ\ue00e"
    assert page.text_blocks == ["本日は晴天なり。", "以上です。"]
    assert (images(page)[0].alt, images(page)[0].text_before) == ("ロゴ", "本日は晴天なり。")


def test_a_page_holding_every_candidate_mark_loses_only_two_characters():
    # Only a page built to do so holds all the marks parse_page can choose from; then
    # U+E000 and U+E002 are removed from it and nothing else.
    hostile = "".join(chr(c) for c in range(0x10FF00, 0x110000))
    page = parse_page(f"<p>a\ue000b\ue001c\ue002d{hostile}</p><img src=x.jpg alt='z\ue002'><p>e</p>", "https://x.jp/", 10_000)
    assert page.text_blocks == [f"ab\ue001cd{hostile}", "e"]
    assert [(i.url, i.alt, i.text_after) for i in images(page)] == [("https://x.jp/x.jpg", "z", "e")]


# --- deep pages


def captioned_photos(n: int = 3) -> str:
    return "".join(f"<figure><img src='p{k}.jpg' alt='写真{k}'><figcaption>説明{k}</figcaption></figure><p>本文{k}</p>" for k in range(n))


@pytest.mark.parametrize("depth", [300, 1000, 3000, 100_000])
def test_page_under_hundreds_of_unclosed_font_tags_is_parsed_whole(depth):
    html = "<html><body><p>はじめに</p>" + "<font color=red size=2>" * depth + captioned_photos() + "<p>おわり</p>"
    page = parse_page(html, "http://old.example.jp/", 200)
    assert [(i.url, i.alt, i.figcaption, i.text_before) for i in images(page)] == [
        ("http://old.example.jp/p0.jpg", "写真0", "説明0", "はじめに"),
        ("http://old.example.jp/p1.jpg", "写真1", "説明1", "本文0"),
        ("http://old.example.jp/p2.jpg", "写真2", "説明2", "本文1"),
    ]
    assert page.text_blocks[-1] == "おわり"


def test_page_too_deep_to_parse_whole_is_rejected_with_a_reason():
    with pytest.raises(HtmlParseError, match="nested too deeply to parse whole"):
        parse_page("<html><body>" + "<div>" * 3000 + captioned_photos(), "https://x.jp/", 200)


def test_hostile_deep_page_is_rejected_in_linear_time():
    # Deep enough for the re-parse without inline tags, whose pattern once backtracked
    # quadratically over unclosed quotes (80 s for these 215 KB).
    import time

    started = time.monotonic()
    with pytest.raises(HtmlParseError, match="nested too deeply"):
        parse_page("<div>" * 3000 + "<b '" * 50_000, "https://x.jp/", 200)
    assert time.monotonic() - started < 10


# --- <picture>, <noscript> and lazy loading

LAZY_NOTE = "<p>JavaScriptを有効にしてください</p>"


def urls_and_alts(html: str) -> list[tuple]:
    return [(i.url, i.problem, i.alt) for i in images(parse_page(html, "https://x.jp/a/", 200))]


def test_picture_whose_only_img_is_in_noscript_gives_the_real_url_and_alt():
    html = f"<p>前</p><picture><source data-srcset='r.webp'><noscript>{LAZY_NOTE}<img src='real.jpg' alt='本物'></noscript></picture><p>後</p>"
    page = parse_page(html, "https://x.jp/a/", 200)
    assert [(i.url, i.alt, i.text_before, i.text_after, i.text_block) for i in images(page)] == [("https://x.jp/a/real.jpg", "本物", "前", "後", 1)]
    assert page.text_blocks == ["前", "後"]  # the noscript's own text is still not page text


@pytest.mark.parametrize("placeholder", ["/img/lazy_placeholder.gif", "blank.gif", "spacer.gif", "grey.png", "data:image/gif;base64,R0lGOD", ""])
@pytest.mark.parametrize("attr", ["data-src", "data-lazy-src", "data-original"])
def test_lazy_image_gives_the_real_url_not_its_placeholder(attr, placeholder):
    assert urls_and_alts(f"<img src='{placeholder}' {attr}='real.jpg' alt='猫' class='lazyload'>") == [("https://x.jp/a/real.jpg", None, "猫")]


@pytest.mark.parametrize("placeholder", ["/img/lazy_placeholder.gif", "spacer.gif", "grey.png", "data:image/gif;base64,R0lGOD"])
@pytest.mark.parametrize("attr", ["data-srcset", "srcset"])
def test_lazy_image_with_a_srcset_gives_its_first_real_url(attr, placeholder):
    srcset = "data:image/gif;base64,R0lG 1x, https://img.x.jp/w_480,h_320/real.jpg 480w, big.jpg 960w"
    assert urls_and_alts(f"<img src='{placeholder}' {attr}='{srcset}' alt='猫'>") == [("https://img.x.jp/w_480,h_320/real.jpg", None, "猫")]


def test_plain_src_is_kept_beside_a_srcset():
    assert urls_and_alts("<img src='photo.jpg' srcset='photo-2x.jpg 2x' alt='猫'>") == [("https://x.jp/a/photo.jpg", None, "猫")]


def test_lazy_image_and_its_noscript_copy_are_one_row():
    html = (
        "<p>前</p><img data-src='real.jpg' class='lazyload' alt='猫'><noscript><img src='real.jpg' alt='猫'></noscript><p>間</p>"
        "<a href='x'><img src='spacer.gif' class='lazy'></a> <noscript><img src='/b/dog.jpg' alt='犬'></noscript><p>後</p>"
        "<picture><source data-srcset='c.webp'><img data-src='c.jpg' alt='鳥'></picture><noscript><picture><img src='c.jpg'></picture></noscript>"
    )
    page = parse_page(html, "https://x.jp/a/", 200)
    assert [(i.index, i.url, i.alt, i.text_before, i.text_after) for i in images(page)] == [
        (0, "https://x.jp/a/real.jpg", "猫", "前", "間"),
        (1, "https://x.jp/b/dog.jpg", "犬", "間", "後"),  # the placeholder takes the noscript's URL and alt
        (2, "https://x.jp/a/c.jpg", "鳥", "後", None),
    ]


def test_noscript_images_of_their_own_are_kept_but_tracking_pixels_are_not():
    html = (
        "<p>前</p><noscript><img height='1' width='1' src='https://tracker.example/px?id=1'></noscript>"
        "<noscript>" + LAZY_NOTE + "<img src='gallery1.jpg' alt='一'><img src='gallery2.jpg' alt='二'></noscript>"
        "<noscript><img src='gallery3.jpg' alt='三'></noscript><p>後</p>"
    )
    page = parse_page(html, "https://x.jp/a/", 200)
    assert [(i.url, i.alt, i.text_before, i.text_after) for i in images(page)] == [
        ("https://x.jp/a/gallery1.jpg", "一", "前", "後"),
        ("https://x.jp/a/gallery2.jpg", "二", "前", "後"),
        ("https://x.jp/a/gallery3.jpg", "三", "前", "後"),  # not the no-script version of the image before it
    ]
    assert page.text_blocks == ["前", "後"]


def test_noscript_without_images_is_still_not_page_text():
    page = parse_page("<body><noscript><p>JavaScriptを有効に</p></noscript><p>本文</p><img src='a.jpg' alt='猫'><p>後</p></body>", "https://x.jp/", 200)
    assert page.text_blocks == ["本文", "後"]
    assert [(i.alt, i.text_before, i.text_after) for i in images(page)] == [("猫", "本文", "後")]


def test_nested_pictures_give_each_img_its_own_row():
    html = (
        "<figure><picture><source srcset='outer.webp'><img src='' alt='外'>"
        "<picture><source srcset='inner.webp 1x'><img alt='内'></picture></picture><figcaption>図</figcaption></figure>"
        "<p>間</p><picture><img src='one.jpg' alt='一'><img src='two.jpg' alt='二'></picture><picture><source srcset='only.webp'></picture>"
    )
    page = parse_page(html, "https://x.jp/a/", 200)
    assert [(i.index, i.url, i.alt, i.figcaption) for i in images(page)] == [
        (0, "https://x.jp/a/outer.webp", "外", "図"),
        (1, "https://x.jp/a/inner.webp", "内", "図"),
        (2, "https://x.jp/a/one.jpg", "一", None),
        (3, "https://x.jp/a/two.jpg", "二", None),
        (4, "https://x.jp/a/only.webp", None, None),
    ]
    assert [i.text_block for i in images(page)] == [0, 0, 2, 2, 2]


# --- robots meta


def test_every_robots_meta_is_read_and_noai_found_in_any_form():
    from asagi_dagster.web.noai import has_noai

    html = "<head><meta name='robots' content='index'><meta name='ROBOTS' content='noindex noai'></head><p>x</p>"
    page = parse_page(html, "https://x.jp/", 10)
    assert page.robots == "index,noindex noai" and has_noai(page.robots)
    page = parse_page("<head><meta name='GPTBot' content='noimageai'><meta name='description' content='noai'></head>", "https://x.jp/", 10)
    assert page.robots == "gptbot: noimageai" and has_noai(page.robots)
    assert parse_page("<head><meta name='robots' content='noindex nofollow'></head>", "https://x.jp/", 10).robots == "noindex nofollow"


def test_images_in_buttons_and_objects_are_kept_without_their_text():
    page = parse_page(
        "<p>前の文</p><button type=submit><img src='/buy.png' alt='購入'> 今すぐ購入</button>"
        "<object data='/movie.swf'><img src='/poster.jpg' alt='ポスター'>代替テキスト</object><p>後の文</p>"
        "<button>画像なし</button>",
        "https://shop.example.jp/",
        100,
    )
    assert [(i.url, i.alt) for i in page.images] == [
        ("https://shop.example.jp/buy.png", "購入"),
        ("https://shop.example.jp/poster.jpg", "ポスター"),
    ]
    assert page.text_blocks == ["前の文", "後の文"]  # a control's words are not page text
    assert page.images[0].text_before == "前の文" and page.images[1].text_after == "後の文"
