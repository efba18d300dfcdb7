"""ascii_only: the paper drops texts made only of ASCII letters, digits and spaces (no
Japanese in them)."""

from __future__ import annotations

import re

from asagi_dagster.pair_rules.base import Check, PairRule, RuleSettings

_ASCII_ONLY = re.compile(r"[A-Za-z0-9 ]*")


class AsciiOnlyRule(RuleSettings):
    pass


def check(rule: AsciiOnlyRule) -> Check:
    return lambda text: "only ASCII letters, digits and spaces" if _ASCII_ONLY.fullmatch(text) else None


RULE = PairRule("ascii_only", "text", AsciiOnlyRule, check, "only ASCII letters, digits and spaces")
