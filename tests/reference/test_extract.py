"""Main text and sentences of real pages (the sample's, in their real encodings)."""

from __future__ import annotations

import pytest

from asagi_dagster.reference.extract import extraction_config, page_sentences, split_sentences
from asagi_dagster.reference.settings import ReferenceTextSettings
from asagi_sample.site import page_html

SETTINGS = ReferenceTextSettings()
CONFIG = extraction_config(SETTINGS)


def sentences(file: str) -> list[str]:
    return page_sentences(page_html(file, "https://img.example.jp"), f"https://example.jp/{file}", SETTINGS, CONFIG)


def test_short_page_keeps_ruby_base_text_and_is_not_flattened():
    found = sentences("ruby.html")
    assert "馬は、草原をはやく走ることができる動物です。" in found
    assert not any(s in ("うま", "そうげん") or "(" in s for s in found)  # no readings, no flattened fragments


def test_news_article_main_text_without_navigation():
    found = sentences("news.html")
    assert found[0] == "宇宙機関は十二日午前、新型ロケットの打ち上げに成功したと発表した。"
    assert "関係者は「大きな一歩だ」と話した。" in found
    assert not any("サイエンス速報" in s for s in found)  # the site header is not main text


def test_broken_markup_and_tables_still_give_sentences():
    found = sentences("broken.html")
    assert "店内の本はすべて三割引きです" in found and not any("|" in s for s in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("猫が寝ている。犬も寝ている！本当なのだろうか？", ["猫が寝ている。", "犬も寝ている！", "本当なのだろうか？"]),
        ("彼は「行こう。」と言った。次の文です。", ["彼は「行こう。」と言った。", "次の文です。"]),
        ("今日の見出し\n\n本文の一文目です。  二文目です。", ["今日の見出し", "本文の一文目です。", "二文目です。"]),
        ("短い。はい。", []),  # under min_sentence_chars (5)
        ("", []),
    ],
)
def test_sentence_split(text, expected):
    assert split_sentences(text, SETTINGS) == expected


def test_pages_without_main_text_give_no_sentences():
    assert page_sentences("<html><body></body></html>", None, SETTINGS, CONFIG) == []
    assert page_sentences("<html><body>\n  \n</body></html>", None, SETTINGS, CONFIG) == []
    long = "あ" * 400 + "。"
    assert split_sentences(long, SETTINGS) == []  # over max_sentence_chars
