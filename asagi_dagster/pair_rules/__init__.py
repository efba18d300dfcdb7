"""The per-pair filter rules, one module each, registered here in the order they run
(text rules, then header rules, then pixel rules; see ``base``).

A new rule is a module with its settings, its check and its phase, and one line below;
the profile's ``filters.rules`` (and each dataset's overrides), the screen and the pass
rates all read this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asagi_dagster.core import by_name
from asagi_dagster.pair_rules import ascii_only, aspect_ratio, harmful_keywords, image_size, monochrome, text_length
from asagi_dagster.pair_rules.base import PHASES, ImageHeader, PairRule, Pixels, RuleSettings

PAIR_RULES: dict[str, PairRule] = by_name(
    text_length.RULE,
    ascii_only.RULE,
    harmful_keywords.RULE,
    image_size.RULE,
    aspect_ratio.RULE,
    monochrome.RULE,
)


def rule_settings(raw: Mapping[str, Any]) -> dict[str, RuleSettings]:
    """Every rule's settings, the profile's entries (by rule name) laid over the defaults;
    an unknown name or a bad value raises ValueError."""
    unknown = sorted(set(raw) - set(PAIR_RULES))
    if unknown:
        raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (rules: {', '.join(PAIR_RULES)})")
    settings = {}
    for name, rule in PAIR_RULES.items():
        value = raw.get(name, {})
        settings[name] = value if isinstance(value, rule.settings) else rule.settings.model_validate(value)
    return settings


__all__ = ["PAIR_RULES", "PHASES", "ImageHeader", "PairRule", "Pixels", "RuleSettings", "rule_settings"]
