"""monochrome: a single-colour image (every RGB channel's standard deviation at most
``max_std``), from the one small decode (Asagi's rule)."""

from __future__ import annotations

from pydantic import Field

from asagi_dagster.pair_rules.base import Check, PairRule, RuleSettings


class MonochromeRule(RuleSettings):
    max_std: float = Field(3.0, ge=0, description="Single-colour when every RGB channel's standard deviation is at most this.")


def check(rule: MonochromeRule) -> Check:
    return lambda pixels: f"colour spread {pixels.colour_spread:.2f} <= {rule.max_std}" if pixels.colour_spread <= rule.max_std else None


RULE = PairRule("monochrome", "pixels", MonochromeRule, check, "a single-colour image")
