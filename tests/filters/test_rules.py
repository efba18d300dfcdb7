"""Text rules, caption choice and per-rule counts."""

from __future__ import annotations

import pytest

from asagi_dagster.core import Rejected
from asagi_dagster.filters.rules import PairScreen, pick_caption
from asagi_dagster.filters.settings import FilterSettings
from tests.filters import images

PHOTO = images.photo("chelsea")


def reason_of(text: str, settings: FilterSettings | None = None) -> str | None:
    try:
        PairScreen(settings or FilterSettings()).check(text, PHOTO)
    except Rejected as rejected:
        return rejected.reason
    return None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("猫", "text_length"),
        ("三毛猫", "text_length"),  # exactly 3 characters is out
        ("三毛猫だ", None),
        ("あ" * 999, None),
        ("あ" * 1000, "text_length"),
        ("A cat sleeping 2024", "ascii_only"),
        ("IMG 0042", "ascii_only"),
        ("A cat, sleeping.", None),  # punctuation is not letters, digits or spaces
        ("縁側の猫 <TEST_STRING_OF_ADULT_KEYWORD>", "harmful_keywords"),
        ("<TEST_STRING_OF_VIOLENCE_KEYWORD> の記事", "harmful_keywords"),
        ("<TEST_STRING_OF_DISCRIMINATION_KEYWORD>", "harmful_keywords"),
        ("縁側で昼寝をする猫", None),
    ],
)
def test_text_rules(text, reason):
    assert reason_of(text) == reason


def test_harmful_keywords_threshold_counts_matches():
    twice = "<TEST_STRING_OF_VIOLENCE_KEYWORD> と <TEST_STRING_OF_VIOLENCE_KEYWORD>"
    assert reason_of(twice) == "harmful_keywords"  # HojiChar's first-match rule
    soft = lambda n: FilterSettings.model_validate({"rules": {"harmful_keywords": {"max_matches": n}}})  # noqa: E731
    assert reason_of(twice, soft(1)) == "harmful_keywords"  # 2 > 1
    assert reason_of(twice, soft(2)) is None
    only_adult = FilterSettings.model_validate({"rules": {"harmful_keywords": {"categories": ["adult"]}}})
    assert reason_of(twice, only_adult) is None


def test_katakana_keywords_inside_longer_words_are_not_matches_by_default():
    assert reason_of("赤いスポーツバイクの側面") is None
    strict = FilterSettings.model_validate({"rules": {"harmful_keywords": {"ignore_confused": False}}})
    assert reason_of("赤いスポーツバイクの側面", strict) == "harmful_keywords"


def test_each_enabled_rule_counts_what_reached_it():
    screen = PairScreen(FilterSettings())
    texts = ["猫", "A cat sleeping", "縁側で昼寝をする猫", "縁側で昼寝をする猫"]
    datas = [PHOTO, PHOTO, images.solid((300, 300)), PHOTO]
    for text, data in zip(texts, datas):
        try:
            screen.check(text, data)
        except Rejected:
            pass
    stats = {row["rule"]: (row["checked"], row["rejected"], row["passed"]) for row in screen.stats.as_rows()}
    assert stats == {
        "text_length": (4, 1, 3),
        "ascii_only": (3, 1, 2),
        "harmful_keywords": (2, 0, 2),
        "image_size": (2, 0, 2),
        "aspect_ratio": (2, 0, 2),
        "monochrome": (2, 1, 1),
    }


def test_caption_is_the_first_configured_field_with_text():
    assert pick_caption({"alt": "  ", "figcaption": "縁側の 猫\n", "title": "t"}, ["alt", "figcaption", "title"]) == ("figcaption", "縁側の 猫")
    assert pick_caption({"alt": "猫の写真", "figcaption": "x"}, ["figcaption", "alt"]) == ("figcaption", "x")
    with pytest.raises(Rejected) as caught:
        pick_caption({"alt": None, "title": ""}, ["alt", "title"])
    assert caught.value.reason == "no_caption_text"
