"""Per-host limits hold when several shards download at once: real subprocesses, each
running ``gather_pair_images`` on its own shard as a ``pair_images`` step does, all
fetching from one loopback host that records when every request arrives and how many
were in flight then.

Each child is configured as the deployment configures it: ``downloaders`` = the number
of steps the Dagster pool lets run at once (here: all of them). The host must then see
no more than the whole budget: at most ``per_host_connections`` requests in flight, and
at most ``downloaders`` requests in any window of ``downloaders x per_host_interval_s``
seconds. The control runs the same children each believing it is alone
(``downloaders`` 1), today's behaviour before budgets were shared out: the host then
sees several times the budget, which shows the checks below can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asagi_dagster.storage import StageWriter
from asagi_dagster.web import schemas
from tests.conftest import PROJECT
from tests.web.test_fetch import JPEG, settings
from tests.web.test_pair_images import pair_row

CHILDREN = 3
URLS_PER_CHILD = 8
# Arrival times are taken at the server: a request that left its child on time can
# arrive this much early relative to another child's (scheduling on a loaded machine).
JITTER_S = 0.08

CHILD = textwrap.dedent("""
    import json, sys
    from asagi_dagster.config import load_config
    from asagi_dagster.web.settings import DownloaderSettings
    from asagi_dagster.storage import StageWriter, Storage
    from asagi_dagster.web import schemas
    from asagi_dagster.web.fetch import Fetcher
    from asagi_dagster.web.pair_images import gather_pair_images

    profile, shard, pairs_url, downloader = sys.argv[1:5]
    storage = Storage(load_config(profile).storage)
    settings = DownloaderSettings(**json.loads(downloader))
    print("ready", flush=True)
    sys.stdin.readline()  # every child starts when the test says go, as steps released by a pool do
    with (
        StageWriter(storage, "pair_images", shard, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(settings) as fetcher,
    ):
        origins = gather_pair_images(storage, pairs_url, None, out, fetcher, settings.workers)
    print(json.dumps(origins), flush=True)
""")


class RecordingHost:
    """One host on loopback: every request (robots.txt too) is answered after ``latency``
    seconds; arrival times and the requests in flight at each arrival are recorded."""

    def __init__(self, latency: float):
        self.latency = latency
        self.arrivals: list[float] = []
        self.in_flight_at_arrival: list[int] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                with host._lock:
                    host._in_flight += 1
                    host.arrivals.append(time.monotonic())
                    host.in_flight_at_arrival.append(host._in_flight)
                try:
                    time.sleep(host.latency)  # the server's response time, not a synchronisation
                    body, content_type = (b"User-agent: *\nAllow: /\n", "text/plain") if self.path == "/robots.txt" else (JPEG, "image/jpeg")
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with host._lock:
                        host._in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def most_in_window(self, window: float) -> int:
        """The most arrivals in any half-open window of ``window`` seconds."""
        assert window > 0
        times = sorted(self.arrivals)
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= window:
                first += 1
            most = max(most, last - first + 1)
        return most

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_shard(storage, shard: str, urls: list[str]) -> str:
    with StageWriter(storage, "image_text_pairs", shard, schemas.IMAGE_TEXT_PAIRS, schemas.IMAGE_TEXT_PAIRS_VERSION) as w:
        for n, url in enumerate(urls):
            w.count_in()
            w.write({**pair_row(f"{shard}-{n}", url, n), "shard": shard})
    return w.manifest.data_url


def download_at_once(storage, profile_path, host: RecordingHost, downloader: dict) -> list[dict]:
    """CHILDREN subprocesses, each downloading its own shard's URLs from ``host``, started
    together; their origin counts."""
    children = []
    try:
        for child in range(CHILDREN):
            shard = f"shard-{child}"
            pairs_url = write_shard(storage, shard, [f"{host.base}/{shard}/{n}.jpg" for n in range(URLS_PER_CHILD)])
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(profile_path), shard, pairs_url, json.dumps(downloader)],
                    cwd=PROJECT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(PROJECT)},
                )
            )
        for process in children:
            assert process.stdout.readline().strip() == "ready", process.communicate()
        for process in children:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in children:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for process in children:
            if process.poll() is None:
                process.kill()
                process.wait()


# Two budgets: one the interval binds (fast responses), one the connection cap binds
# (responses slower than the gap between requests).
BUDGETS = {
    "interval": dict(latency=0.02, per_host_interval_s=0.15, per_host_connections=CHILDREN, workers=4),
    "connections": dict(latency=0.4, per_host_interval_s=0.05, per_host_connections=2 * CHILDREN, workers=8),
}


@pytest.fixture
def host_for(request):
    hosts = []

    def make(latency: float) -> RecordingHost:
        hosts.append(RecordingHost(latency))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_steps_downloading_at_once_stay_within_one_hosts_budget(storage, profile_path, host_for, budget):
    latency, limits = BUDGETS[budget]["latency"], {k: v for k, v in BUDGETS[budget].items() if k != "latency"}
    host = host_for(latency)
    results = download_at_once(storage, profile_path, host, settings(**limits, downloaders=CHILDREN).model_dump())

    assert [r["download"] for r in results] == [URLS_PER_CHILD] * CHILDREN
    assert len(host.arrivals) == CHILDREN * (URLS_PER_CHILD + 1)  # each child read robots.txt once
    assert max(host.in_flight_at_arrival) <= limits["per_host_connections"], host.in_flight_at_arrival
    window = CHILDREN * limits["per_host_interval_s"]
    assert host.most_in_window(window - JITTER_S) <= CHILDREN, sorted(host.arrivals)
    if budget == "connections":  # each child used its share of connections, not just one
        assert max(host.in_flight_at_arrival) > CHILDREN, host.in_flight_at_arrival


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_control_children_each_alone_exceed_the_budget(storage, profile_path, host_for, budget):
    """Each child spending the whole budget as if alone: the checks above catch it."""
    latency, limits = BUDGETS[budget]["latency"], {k: v for k, v in BUDGETS[budget].items() if k != "latency"}
    host = host_for(latency)
    download_at_once(storage, profile_path, host, settings(**limits, downloaders=1).model_dump())

    window = CHILDREN * limits["per_host_interval_s"]
    if budget == "interval":
        assert host.most_in_window(window - JITTER_S) > CHILDREN, sorted(host.arrivals)
    else:
        assert max(host.in_flight_at_arrival) > limits["per_host_connections"], host.in_flight_at_arrival
