"""Filtered splits: the papers' per-pair rules, then document images, duplicates and
benchmark images removed across every source."""


class Rejected(Exception):
    """A record that cannot be kept; ``reason`` is its rejection reason, ``detail`` says why."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
