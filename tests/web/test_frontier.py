"""HostFrontier: the order in which read-ahead URLs are handed to the workers."""

from __future__ import annotations

import time

from asagi_dagster.web.frontier import HostFrontier, host_of
from tests.web.test_fetch import JPEG, LoopbackServer, image, settings
from tests.web.test_pair_images import pair_row, run_gather, write_pairs


def test_hosts_listed_in_runs_are_interleaved():
    frontier = HostFrontier(interval=10.0, connections=None)
    for host in ("a", "b", "c"):
        for n in range(3):
            frontier.add(f"http://{host}.test/{n}.jpg")
    # each host's turn is 10 s away once it has had one: the others go first
    assert [host_of(frontier.take()) for _ in range(3)] == ["a.test", "b.test", "c.test"]
    assert len(frontier) == 6
    # none ready now: nothing is handed out, and the caller learns when a turn comes
    before = time.monotonic()
    assert frontier.take() is None
    assert before + 9.5 < frontier.wake_at < time.monotonic() + 10.5
    assert len(frontier) == 6


def test_a_frontier_with_nothing_in_flight_never_stalls():
    frontier = HostFrontier(interval=10.0, connections=1)
    frontier.add("http://a.test/0.jpg")
    frontier.add("http://a.test/1.jpg")
    first = frontier.take()
    assert frontier.take() is None  # its one connection is out: only done() frees it
    assert frontier.wake_at is None
    frontier.done(first)
    assert frontier.take() is None and frontier.wake_at is not None  # free, but its turn is 10 s away


def test_a_hosts_first_fetch_counts_its_robots_txt():
    frontier = HostFrontier(interval=10.0, connections=None, first_requests=2)
    frontier.add("http://a.test/0.jpg")
    frontier.add("http://a.test/1.jpg")
    before = time.monotonic()
    frontier.take()
    after = time.monotonic()
    assert frontier.take() is None
    assert before + 20 <= frontier.wake_at <= after + 20  # two turns: robots.txt, then the image


def test_a_host_at_its_connection_cap_waits_for_done():
    frontier = HostFrontier(interval=0.0, connections=2)
    for n in range(3):
        frontier.add(f"http://busy.test/{n}.jpg")
    first, second = frontier.take(), frontier.take()
    frontier.add("http://idle.test/x.jpg")
    assert frontier.take() == "http://idle.test/x.jpg"  # busy.test has both its connections out
    frontier.done(first)
    assert frontier.take() == "http://busy.test/2.jpg"
    frontier.done(second)
    assert len(frontier) == 0


def test_without_limits_the_file_order_is_kept_within_a_host():
    frontier = HostFrontier(interval=0.0, connections=None)
    urls = [f"http://one.test/{n}.jpg" for n in range(5)]
    for url in urls:
        frontier.add(url)
    taken = [frontier.take() for _ in urls]
    assert taken == urls


def test_unparseable_urls_share_one_queue():
    assert host_of("http://[::1/x") == ""
    assert host_of("not a url") == ""
    assert host_of("HTTP://Example.TEST:8080/x") == "example.test"


def test_a_shard_listing_hosts_in_runs_is_fetched_host_by_host_in_parallel(storage):
    """gather_pair_images over 4 hosts of 4 images each, listed host after host, with a
    0.3 s per-host interval: every host is asked before any is asked twice, and the shard
    takes about the interval's bound (5 requests per host, robots.txt included), not the
    16 x 0.3 s of asking the hosts one after another."""
    servers = [LoopbackServer(host=f"127.0.0.{n}") for n in range(1, 5)]
    try:
        rows = []
        for s, server in enumerate(servers):
            for n in range(4):
                server.routes[f"/{n}.jpg"] = image(JPEG, "image/jpeg")
                rows.append(pair_row(f"p-{s}-{n}", server.url(f"/{n}.jpg"), len(rows)))
        pairs = write_pairs(storage, rows)
        started = time.monotonic()
        origins, manifest = run_gather(storage, pairs.data_url, None, settings(per_host_interval_s=0.3, allow_networks=["127.0.0.0/8"]), workers=4)
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            server.close()
    assert origins == {"warc": 0, "cache": 0, "download": 16}
    assert manifest.rows_out == 16
    images = sorted((t, s) for s, server in enumerate(servers) for t in server.times(prefix="/") if t not in server.times("/robots.txt"))
    first_round = [s for _, s in images[:4]]
    assert sorted(first_round) == [0, 1, 2, 3], images
    assert elapsed < 3.5, elapsed  # the bound is about 1.5 s; one host after another, over 4.8 s
