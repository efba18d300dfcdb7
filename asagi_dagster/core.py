"""Small helpers every stage uses: the fingerprint of what decides an output, a number
fixed by a key, batching an iterator, and the registries' constructor."""

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
