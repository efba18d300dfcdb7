"""aspect_ratio: long side / short side at most ``max_ratio``, from the header alone
(Asagi's rule)."""

from __future__ import annotations

from pydantic import Field

from asagi_dagster.pair_rules.base import Check, ImageHeader, PairRule, RuleSettings


class AspectRatioRule(RuleSettings):
    max_ratio: float = Field(3.0, ge=1.0, description="Long side / short side above this is rejected.")


def check(rule: AspectRatioRule) -> Check:
    def problem(header: ImageHeader) -> str | None:
        ratio = max(header.width, header.height) / min(header.width, header.height)
        return f"{ratio:.2f} > {rule.max_ratio}" if ratio > rule.max_ratio else None

    return problem


RULE = PairRule("aspect_ratio", "header", AspectRatioRule, check, "too long and thin")
