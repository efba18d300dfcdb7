"""text_length: the pair's text must be longer than ``min_chars`` and shorter than
``max_chars`` (Asagi's rule)."""

from __future__ import annotations

from pydantic import Field

from asagi_dagster.pair_rules.base import Check, PairRule, RuleSettings


class TextLengthRule(RuleSettings):
    min_chars: int = Field(3, ge=0, description="Text of this many characters or fewer is rejected.")
    max_chars: int = Field(1000, gt=0, description="Text of this many characters or more is rejected.")


def check(rule: TextLengthRule) -> Check:
    def problem(text: str) -> str | None:
        if len(text) <= rule.min_chars:
            return f"{len(text)} characters <= {rule.min_chars}"
        if len(text) >= rule.max_chars:
            return f"{len(text)} characters >= {rule.max_chars}"
        return None

    return problem


RULE = PairRule("text_length", "text", TextLengthRule, check, "text too short or too long")
