"""Small helpers every stage uses: the fingerprint of what decides an output, a number
fixed by a key, and batching an iterator."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import islice


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
