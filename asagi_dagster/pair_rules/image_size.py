"""image_size: both sides longer than ``min_side`` and shorter than ``max_side`` pixels,
from the header alone (Asagi's rule)."""

from __future__ import annotations

from pydantic import Field

from asagi_dagster.pair_rules.base import Check, ImageHeader, PairRule, RuleSettings


class ImageSizeRule(RuleSettings):
    min_side: int = Field(100, ge=0, description="A side of this many pixels or fewer is rejected.")
    max_side: int = Field(2048, gt=0, description="A side of this many pixels or more is rejected.")


def check(rule: ImageSizeRule) -> Check:
    def problem(header: ImageHeader) -> str | None:
        short, long = sorted((header.width, header.height))
        if short <= rule.min_side:
            return f"{header.width}x{header.height}: a side <= {rule.min_side} px"
        if long >= rule.max_side:
            return f"{header.width}x{header.height}: a side >= {rule.max_side} px"
        return None

    return problem


RULE = PairRule("image_size", "header", ImageSizeRule, check, "an image side too small or too large")
