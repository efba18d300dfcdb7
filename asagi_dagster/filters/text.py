"""The text rules of a pair: length, ASCII-only, harmful keywords (HojiChar's lists)."""

from __future__ import annotations

import re

from hojichar import Document
from hojichar.filters.document_filters import (
    DiscardAdultContentJa,
    DiscardDiscriminationContentJa,
    DiscardViolenceContentJa,
)

from asagi_dagster.config import AsciiOnlyRule, HarmfulKeywordsRule, TextLengthRule

_ASCII_ONLY = re.compile(r"[A-Za-z0-9 ]*")
_HOJICHAR = {
    "adult": DiscardAdultContentJa,
    "discrimination": DiscardDiscriminationContentJa,
    "violence": DiscardViolenceContentJa,
}


def text_length(text: str, rule: TextLengthRule) -> str | None:
    """Why the text is too short or too long, or None."""
    if len(text) <= rule.min_chars:
        return f"{len(text)} characters <= {rule.min_chars}"
    if len(text) >= rule.max_chars:
        return f"{len(text)} characters >= {rule.max_chars}"
    return None


def ascii_only(text: str, rule: AsciiOnlyRule) -> str | None:
    """The paper drops texts made only of ASCII letters, digits and spaces (no Japanese)."""
    return "only ASCII letters, digits and spaces" if _ASCII_ONLY.fullmatch(text) else None


class HarmfulKeywords:
    """HojiChar's Japanese keyword lists, as its filters use them.

    ``max_matches`` 0 is HojiChar's own rule (the first match rejects, strict: one news
    word rejects an article); N > 0 rejects only on more than N matches, as
    llm-jp-corpus softened it.
    """

    def __init__(self, rule: HarmfulKeywordsRule):
        self.max_matches = rule.max_matches
        self.filters = {name: _HOJICHAR[name](ignore_confused=rule.ignore_confused) for name in rule.categories}

    def __call__(self, text: str) -> str | None:
        for name, keyword_filter in self.filters.items():
            if self.max_matches == 0:
                if keyword_filter.apply(Document(text)).is_rejected:
                    return f"{name}: {keyword_filter.matched_text!r}"
            else:
                # HojiChar's filters stop at the first match; count with its own pattern.
                matches = [m.group() for m in keyword_filter.keyword_pat.finditer(text)]
                if len(matches) > self.max_matches:
                    return f"{name}: {len(matches)} matches > {self.max_matches} ({', '.join(sorted(set(matches))[:5])})"
        return None
