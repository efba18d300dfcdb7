"""The per-pair rules (``asagi_dagster.pair_rules``) applied: a pair's text and image
bytes -> kept facts or the first rule it fails.

Text rules run first (cheap), then the image header rules (no pixel decode), and only
then one small decode for the pixel rules and the perceptual hash. Every enabled rule
counts how many pairs reached it and how many it rejected, so each rule's pass rate is
known (pairs rejected by an earlier rule never reach a later one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from asagi_dagster.core import Rejected
from asagi_dagster.filters.images import colour_spread, decode_small, perceptual_hash, read_header
from asagi_dagster.filters.settings import FilterSettings
from asagi_dagster.pair_rules import PAIR_RULES, PHASES, ImageHeader, Pixels
from asagi_dagster.pair_rules.base import Check

RULE_ORDER = tuple(PAIR_RULES)  # the order the rules run in, and pass rates list them


@dataclass(slots=True)
class KeptPair:
    header: ImageHeader
    colour_spread: float
    phash: int


class RuleStats:
    """Per rule (or step), in ``order``: rows that reached it and rows it rejected."""

    def __init__(self, order: tuple[str, ...] = RULE_ORDER) -> None:
        self.order = order
        self.checked: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def as_rows(self) -> list[dict]:
        return [
            {"rule": rule, "checked": self.checked[rule], "rejected": self.rejected[rule], "passed": self.checked[rule] - self.rejected[rule]}
            for rule in self.order
            if self.checked[rule]
        ]


class PairScreen:
    def __init__(self, settings: FilterSettings):
        self.settings = settings
        self.stats = RuleStats()
        # The enabled rules' checks by phase, in registry order, each built once.
        self.checks: dict[str, list[tuple[str, Check]]] = {phase: [] for phase in PHASES}
        for name, rule in PAIR_RULES.items():
            rule_settings = settings.rules[name]
            if rule_settings.enabled:
                self.checks[rule.phase].append((name, rule.make(rule_settings)))

    def check(self, text: str, data: bytes) -> KeptPair:
        """Raises Rejected with the first failing rule's name (or an image-safety reason)."""
        self.check_text(text)
        image, header = self.check_header(data)
        return self.check_pixels(image, header)

    def check_text(self, text: str) -> None:
        self._apply("text", text)

    def check_header(self, data: bytes) -> tuple[Image.Image, ImageHeader]:
        """Image safety and the header rules, from the header alone (no pixels decoded)."""
        image, header = read_header(data, self.settings.image_safety)
        self._apply("header", header)
        return image, header

    def check_pixels(self, image: Image.Image, header: ImageHeader) -> KeptPair:
        """One small decode: the pixel rules and the perceptual hash."""
        small = decode_small(image, self.settings.image_safety.thumbnail_side)
        spread = colour_spread(small)
        self._apply("pixels", Pixels(colour_spread=spread))
        return KeptPair(header=header, colour_spread=spread, phash=perceptual_hash(small))

    def _apply(self, phase: str, value: Any) -> None:
        for rule, check in self.checks[phase]:
            self.stats.checked[rule] += 1
            problem = check(value)
            if problem is not None:
                self.stats.rejected[rule] += 1
                raise Rejected(rule, problem)


def pick_caption(candidates: dict[str, str | None], fields: Sequence[str]) -> tuple[str, str]:
    """The first configured field with text, as (field, text); raises Rejected when none has."""
    for name in fields:
        text = " ".join((candidates.get(name) or "").split())
        if text:
            return name, text
    raise Rejected("no_caption_text", f"none of {', '.join(fields)} has text")
