"""What a per-pair filter rule is: its settings (the profile's ``filters.rules.<name>``),
the phase it runs in, and its check, which says why a pair fails or returns None.

Phases run cheapest first, and a pair stops at the first rule it fails:
- ``text``: the pair's text;
- ``header``: the image's header (format, size), read without decoding pixels;
- ``pixels``: facts from the one small decode (``Pixels``).

The package imports nothing of the library but ``core``, so the profile can build its rule settings from
the registry without depending on the filter stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Phase = Literal["text", "header", "pixels"]
PHASES: tuple[Phase, ...] = ("text", "header", "pixels")  # the order they run in


class RuleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


@dataclass(slots=True)
class ImageHeader:
    format: str  # Pillow's name: JPEG, PNG, GIF, WEBP, ...
    width: int
    height: int
    mode: str  # as stored: RGB, L, P, CMYK, I;16, RGBA, ...
    animated: bool  # animated GIF/WebP/PNG: their first frame is the one used


@dataclass(slots=True, frozen=True)
class Pixels:
    """What the pixel rules see of the one small decode."""

    colour_spread: float  # the largest standard deviation of the RGB channels


Check = Callable[[Any], str | None]  # the phase's value (text, ImageHeader or Pixels) -> why it fails, or None


@dataclass(frozen=True)
class PairRule:
    name: str  # the profile's filters.rules key and the rejection reason
    phase: Phase
    settings: type[RuleSettings]
    make: Callable[[Any], Check]  # the rule's settings -> its check, built once per screen
    description: str  # for the docs and the UI
