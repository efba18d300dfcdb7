"""Progress lines: how much of a step's work is done, of how much, and at what rate.

They are ordinary log messages (the run's log in the UI, through Dagster Pipes from the
GPU programs), marked so that the CLI can pick them out and print them while it waits
(``is_progress``); other log messages stay in the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MARK = "progress: "


def is_progress(message: str) -> bool:
    return message.startswith(MARK)


def progress_line(what: str, done: int, total: int | None, unit: str, per_second: float | None, detail: str = "") -> str:
    """E.g. ``progress: ja-vg-vqa-500|vlm_stage2 64/500 items (3.1/s)``."""
    of = f"/{total}" if total is not None else ""
    rate = f" ({per_second:.2g}/s)" if per_second else ""
    return f"{MARK}{what} {done}{of} {unit}{rate}{', ' + detail if detail else ''}"


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count else None


class Progress:
    """Counts work done and says so through ``log`` when ``every_s`` has passed since it
    last spoke, and when the total is reached: often enough to show the work moving,
    rarely enough to keep a run's log readable."""

    def __init__(self, log: Callable[[str], None], what: str, total: int | None, unit: str, every_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.log, self.what, self.total, self.unit, self.every_s, self.clock = log, what, total, unit, every_s, clock
        self.done = 0
        self.began = self.spoke = clock()

    def add(self, count: int = 1, detail: str = "") -> None:
        self.done += count
        now = self.clock()
        if now - self.spoke >= self.every_s or (self.total is not None and self.done >= self.total):
            self.spoke = now
            self.log(progress_line(self.what, self.done, self.total, self.unit, rate(self.done, now - self.began), detail))
