"""The per-pair rules in one place: a pair's text and image bytes -> kept facts or the
first rule it fails.

Text rules run first (cheap), then the image header rules (no pixel decode), and only
then one small decode for the single-colour check and the perceptual hash. Every
enabled rule counts how many pairs reached it and how many it rejected, so each rule's
pass rate is known (pairs rejected by an earlier rule never reach a later one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from asagi_dagster.config import FilterSettings
from asagi_dagster.filters import Rejected
from asagi_dagster.filters.images import ImageHeader, colour_spread, decode_small, perceptual_hash, read_header
from asagi_dagster.filters.text import HarmfulKeywords, ascii_only, text_length

RULE_ORDER = ("text_length", "ascii_only", "harmful_keywords", "image_size", "aspect_ratio", "monochrome")


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
        rules = settings.rules
        self._harmful = HarmfulKeywords(rules.harmful_keywords) if rules.harmful_keywords.enabled else None

    def check(self, text: str, data: bytes) -> KeptPair:
        """Raises Rejected with the first failing rule's name (or an image-safety reason)."""
        self.check_text(text)
        image, header = self.check_header(data)
        return self.check_pixels(image, header)

    def check_text(self, text: str) -> None:
        rules = self.settings.rules
        if rules.text_length.enabled:
            self._apply("text_length", text_length(text, rules.text_length))
        if rules.ascii_only.enabled:
            self._apply("ascii_only", ascii_only(text, rules.ascii_only))
        if self._harmful:
            self._apply("harmful_keywords", self._harmful(text))

    def check_header(self, data: bytes) -> tuple[Image.Image, ImageHeader]:
        """Image safety and the size rules, from the header alone (no pixels decoded)."""
        rules = self.settings.rules
        image, header = read_header(data, self.settings.image_safety)
        if rules.image_size.enabled:
            self._apply("image_size", _size_problem(header, rules.image_size.min_side, rules.image_size.max_side))
        if rules.aspect_ratio.enabled:
            ratio = max(header.width, header.height) / min(header.width, header.height)
            self._apply("aspect_ratio", f"{ratio:.2f} > {rules.aspect_ratio.max_ratio}" if ratio > rules.aspect_ratio.max_ratio else None)
        return image, header

    def check_pixels(self, image: Image.Image, header: ImageHeader) -> KeptPair:
        """One small decode: the single-colour rule and the perceptual hash."""
        small = decode_small(image, self.settings.image_safety.thumbnail_side)
        spread = colour_spread(small)
        max_std = self.settings.rules.monochrome.max_std
        if self.settings.rules.monochrome.enabled:
            self._apply("monochrome", f"colour spread {spread:.2f} <= {max_std}" if spread <= max_std else None)
        return KeptPair(header=header, colour_spread=spread, phash=perceptual_hash(small))

    def _apply(self, rule: str, problem: str | None) -> None:
        self.stats.checked[rule] += 1
        if problem is not None:
            self.stats.rejected[rule] += 1
            raise Rejected(rule, problem)


def _size_problem(header: ImageHeader, min_side: int, max_side: int) -> str | None:
    short, long = sorted((header.width, header.height))
    if short <= min_side:
        return f"{header.width}x{header.height}: a side <= {min_side} px"
    if long >= max_side:
        return f"{header.width}x{header.height}: a side >= {max_side} px"
    return None


def pick_caption(candidates: dict[str, str | None], fields: Sequence[str]) -> tuple[str, str]:
    """The first configured field with text, as (field, text); raises Rejected when none has."""
    for name in fields:
        text = " ".join((candidates.get(name) or "").split())
        if text:
            return name, text
    raise Rejected("no_caption_text", f"none of {', '.join(fields)} has text")
