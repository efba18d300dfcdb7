"""Filtered splits: the papers' per-pair rules, then document images, duplicates and
benchmark images removed across every source."""


class Rejected(Exception):
    """A record that cannot be kept; ``reason`` is its rejection reason, ``detail`` says why."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def write_outcomes(out, outcomes) -> None:
    """Write (record id, row or Rejected) pairs to a StageWriter, counting each one in."""
    for record_id, row in outcomes:
        out.count_in()
        if isinstance(row, Rejected):
            out.reject(record_id, row.reason, row.detail)
        else:
            out.write(row, size_hint=len(row.get("bytes") or b""))
