"""Which URL to fetch next: the one whose host may be asked soonest.

A shard lists a page's images together, and they mostly come from one host. Fetched in
file order, every worker would queue behind that host's per-host interval while other
hosts sit idle further down the file (measured: 20 hosts of 20 images each at 1 s per
host took 105 s instead of the 21 s the interval allows). The frontier keeps the URLs
read ahead in one queue per host and hands out a URL of a host whose turn has come,
keeping for each host the same interval and connection cap as the fetcher's throttle.
It only chooses the order; the throttle still enforces the limits.
"""

from __future__ import annotations

import math
import time
from collections import deque
from urllib.parse import urlsplit

# Hosts looked at per choice: enough to find a ready one among those waiting first,
# few enough that choosing stays cheap with thousands of hosts queued.
_SCAN = 32


def host_of(url: str) -> str:
    """The host ``url`` names, for scheduling only (unparseable URLs share the key '')."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostFrontier:
    """``first_requests``: requests a host's first fetch makes (2 with its robots.txt)."""

    def __init__(self, interval: float, connections: int | None, first_requests: int = 1):
        self.interval = interval
        self.connections = math.inf if connections is None else connections
        self.first_requests = first_requests
        self.wake_at: float | None = None  # after a take() that found no host ready: when one will be
        self._queues: dict[str, deque[str]] = {}
        self._order: deque[str] = deque()  # hosts with URLs queued, least recently served first
        self._next_turn: dict[str, float] = {}
        self._given: dict[str, int] = {}  # URLs handed out and not yet done, per host
        self._queued = 0

    def __len__(self) -> int:
        return self._queued

    def add(self, url: str) -> None:
        host = host_of(url)
        queue = self._queues.get(host)
        if queue is None:
            queue = self._queues[host] = deque()
            self._order.append(host)
        queue.append(url)
        self._queued += 1

    def take(self) -> str | None:
        """A URL of the first host (of those waiting longest) whose turn has come and that
        has a connection free, or None, with ``wake_at`` set to when a host's turn comes
        (None if only a ``done`` can free one). Pair every URL with ``done``."""
        now = time.monotonic()
        self.wake_at = None
        for index in range(min(_SCAN, len(self._order))):
            ready = self._ready_at(self._order[index], now)
            if ready <= now:
                return self._take(index, now)
            if ready < math.inf:
                self.wake_at = ready if self.wake_at is None else min(self.wake_at, ready)
        if self.wake_at is None and not self._given and self._order:
            return self._take(0, now)  # nothing in flight will call done: never stall
        return None

    def done(self, url: str) -> None:
        host = host_of(url)
        left = self._given[host] - 1
        if left:
            self._given[host] = left
        else:
            del self._given[host]

    def _take(self, index: int, now: float) -> str:
        host = self._order[index]
        del self._order[index]
        queue = self._queues[host]
        url = queue.popleft()
        self._queued -= 1
        if queue:
            self._order.append(host)
        else:
            del self._queues[host]
        turns = 1 if host in self._next_turn else self.first_requests
        self._next_turn[host] = max(now, self._next_turn.get(host, now)) + turns * self.interval
        self._given[host] = self._given.get(host, 0) + 1
        return url

    def _ready_at(self, host: str, now: float) -> float:
        if self._given.get(host, 0) >= self.connections:
            return math.inf  # until one of its fetches is done
        return self._next_turn.get(host, now)
