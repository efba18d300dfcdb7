"""The per-host connection cap of ``HostThrottle``, the shares ``host_throttle`` gives one
downloader of several, and what the stream reports for a connection closed under it."""

from __future__ import annotations

import math
import socket
import struct
import threading
import time

import httpcore
import pytest
from pydantic import ValidationError

from asagi_dagster.web.fetch import HostThrottle, _GuardedStream, host_throttle
from asagi_dagster.web.settings import DownloaderSettings


def test_a_host_at_its_cap_waits_for_a_release():
    throttle = HostThrottle(0.0, connections=2)
    assert throttle.acquire("a.test") and throttle.acquire("a.test")
    assert throttle.acquire("b.test")  # another host has its own cap
    got_third = threading.Event()

    def third() -> None:
        if throttle.acquire("a.test"):
            got_third.set()

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not got_third.wait(0.3)  # both of a.test's slots are held
    assert throttle.in_flight("a.test") == 2
    throttle.release("a.test")
    assert got_third.wait(5)
    waiter.join()
    assert throttle.in_flight("a.test") == 2


def test_a_slot_that_comes_after_the_deadline_is_not_taken():
    throttle = HostThrottle(0.0, connections=1)
    assert throttle.acquire("a.test")
    started = time.monotonic()
    assert not throttle.acquire("a.test", deadline=started + 0.2)
    assert 0.15 <= time.monotonic() - started < 2
    assert throttle.in_flight("a.test") == 1


def test_a_cancel_ends_a_wait_for_a_slot():
    throttle = HostThrottle(0.0, connections=1)
    cancelled = threading.Event()
    assert throttle.acquire("a.test")
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(throttle.acquire("a.test", math.inf, cancelled)))
    waiter.start()
    cancelled.set()
    waiter.join(timeout=5)
    assert outcome == [False]
    assert throttle.in_flight("a.test") == 1


def test_a_turn_refused_after_a_slot_gives_the_slot_back():
    throttle = HostThrottle(10.0, connections=2)
    assert throttle.acquire("a.test")
    throttle.release("a.test")
    # the next turn is 10 s away, past the deadline: no request, no slot held
    assert not throttle.acquire("a.test", deadline=time.monotonic() + 1)
    assert throttle.in_flight("a.test") == 0


def test_each_downloader_keeps_its_share_of_the_budgets():
    alone = host_throttle(DownloaderSettings(per_host_interval_s=0.5, per_host_connections=6))
    assert (alone.interval, alone.connections) == (0.5, 6)
    shared = host_throttle(DownloaderSettings(per_host_interval_s=0.5, per_host_connections=6, downloaders=4))
    assert (shared.interval, shared.connections) == (2.0, 1)


def test_every_downloader_needs_a_connection_per_host():
    with pytest.raises(ValidationError, match="per_host_connections"):
        DownloaderSettings(per_host_connections=2, downloaders=3)


# --- a connection closed under a request -------------------------------------------------


def test_a_socket_closed_by_this_process_makes_the_pool_use_another_connection():
    """httpcore's pool can close a connection it has just handed to a request; the stream
    reports that as ConnectionNotAvailable, which the pool answers by resending the
    request on another connection. A connection the peer resets stays a read error."""
    ours, peer = socket.socketpair()
    stream = _GuardedStream(ours)
    ours.close()
    with pytest.raises(httpcore.ConnectionNotAvailable):
        stream.read(100)
    with pytest.raises(httpcore.ConnectionNotAvailable):
        stream.write(b"GET / HTTP/1.1\r\n\r\n")
    peer.close()

    ours, peer = socket.socketpair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ours.sendall(b"x")
    peer.close()  # unread data and linger 0: a reset
    with pytest.raises(httpcore.ReadError):
        _GuardedStream(ours).read(100)
    ours.close()
