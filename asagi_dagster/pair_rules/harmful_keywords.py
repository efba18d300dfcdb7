"""harmful_keywords: HojiChar's Japanese keyword lists (adult, discrimination, violence),
as its filters use them.

``max_matches`` 0 is HojiChar's own rule (the first match rejects, strict: one news word
rejects an article); N > 0 rejects only on more than N matches, as llm-jp-corpus
softened it.
"""

from __future__ import annotations

import functools
from typing import Literal

from hojichar import Document
from hojichar.filters.document_filters import (
    DiscardAdultContentJa,
    DiscardDiscriminationContentJa,
    DiscardViolenceContentJa,
)
from pydantic import Field

from asagi_dagster.pair_rules.base import PairRule, RuleSettings

_HOJICHAR = {
    "adult": DiscardAdultContentJa,
    "discrimination": DiscardDiscriminationContentJa,
    "violence": DiscardViolenceContentJa,
}


class HarmfulKeywordsRule(RuleSettings):
    categories: list[Literal["adult", "discrimination", "violence"]] = ["adult", "discrimination", "violence"]
    max_matches: int = Field(0, ge=0, description="0: HojiChar's rule, the first keyword rejects. N: rejected on more than N keyword matches.")
    # HojiChar's own option: a katakana keyword counts only when not inside a longer
    # katakana word (else バイク, "bike", matches one of its adult keywords).
    ignore_confused: bool = True


@functools.cache
def _keyword_filter(name: str, ignore_confused: bool):
    """HojiChar's filter for one list, built once per process: building reads and compiles
    the list (about 5 ms), which a step screening 100 files would otherwise pay per file.
    Shared by the screens of one process, which run one at a time (a filter keeps its last
    match for the reason's detail)."""
    return _HOJICHAR[name](ignore_confused=ignore_confused)


class HarmfulKeywords:
    """The check, holding HojiChar's compiled filters."""

    def __init__(self, rule: HarmfulKeywordsRule):
        self.max_matches = rule.max_matches
        self.filters = {name: _keyword_filter(name, rule.ignore_confused) for name in rule.categories}

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


RULE = PairRule("harmful_keywords", "text", HarmfulKeywordsRule, HarmfulKeywords, "a harmful keyword (HojiChar's lists)")
