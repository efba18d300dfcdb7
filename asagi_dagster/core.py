"""Small helpers every stage uses: the fingerprint of what decides an output, a number
fixed by a key, batching an iterator, the registries' constructor, and a record that
cannot be kept (``Rejected``) with the writing of such outcomes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import islice
from typing import Protocol, TypeVar


def fingerprint(parts: dict) -> str:
    """A short hash of what decides an output; a change starts the work afresh."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest_int(key: str) -> int:
    """A 64-bit number fixed by ``key`` (draws and choices that must not depend on order)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def batches(iterator: Iterator, size: int) -> Iterator[list]:
    """Lists of up to ``size`` items, in order, until ``iterator`` ends."""
    while batch := list(islice(iterator, size)):
        yield batch


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Entry = TypeVar("Entry", bound=_Named)


def by_name(*entries: Entry) -> dict[str, Entry]:
    """A registry: the entries by their ``name``, in the order given. A name given twice
    is an error (a dict built from them would keep the later one silently)."""
    registry: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in registry:
            raise ValueError(f"{entry.name!r} is registered twice")
        registry[entry.name] = entry
    return registry


class Rejected(Exception):
    """A record that cannot be kept; ``reason`` is its rejection reason, ``detail`` says why."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def write_outcomes(out, outcomes) -> None:
    """Write (record id, row or Rejected) pairs to a StageWriter (``out``), counting each one in."""
    for record_id, row in outcomes:
        out.count_in()
        if isinstance(row, Rejected):
            out.reject(record_id, row.reason, row.detail)
        else:
            out.write(row, size_hint=len(row.get("bytes") or b""))
