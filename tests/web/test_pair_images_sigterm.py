"""A pair-images run stuck in slow downloads stops within 10 s of SIGTERM and commits
nothing: a real subprocess runs gather_pair_images, as the ``pair_images`` asset does,
against a loopback server that sends its response headers one byte per second.

Dagster maps SIGTERM onto the SIGINT handler (KeyboardInterrupt), and while a step runs,
onto a handler that raises DagsterExecutionInterruptedError; both are tried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from asagi_dagster.web.pair_images import CACHE_DIR
from tests.conftest import PROJECT as PROJECT_ROOT
from tests.conftest import default_signals
from tests.web.test_fetch import LoopbackServer, image, settings, status
from tests.web.test_fetch_deadline import drip
from tests.web.test_pair_images import SHARD, pair_row, run_gather, write_pairs

CHILD = textwrap.dedent(
    """
    import json, signal, sys
    from asagi_dagster.config import load_config
    from asagi_dagster.web.settings import DownloaderSettings
    from asagi_dagster.storage import StageWriter, Storage
    from asagi_dagster.web import schemas
    from asagi_dagster.web.fetch import Fetcher
    from asagi_dagster.web.pair_images import gather_pair_images

    profile, pairs_url, mode, downloader = sys.argv[1:5]
    if mode == "keyboard":  # dagster's setup_interrupt_handlers: SIGTERM does what SIGINT does
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
    else:  # dagster's raise_interrupts_as, in force while a step executes
        from dagster import DagsterExecutionInterruptedError
        def interrupt(signo, frame):
            raise DagsterExecutionInterruptedError()
        signal.signal(signal.SIGTERM, interrupt)
    storage = Storage(load_config(profile).storage)
    settings = DownloaderSettings(**json.loads(downloader))
    with (
        StageWriter(storage, "pair_images", "%s", schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(settings) as fetcher,
    ):
        print("running", flush=True)
        gather_pair_images(storage, pairs_url, None, out, fetcher, workers=4)
    print("finished", flush=True)
"""
    % SHARD
)

STUCK = 12  # more stalled URLs than workers: some are still queued when SIGTERM comes


@pytest.mark.parametrize("mode", ["keyboard", "dagster"])
def test_sigterm_stops_a_run_stuck_in_slow_downloads(storage, profile_path, mode):
    server = LoopbackServer()
    child = None
    try:
        server.routes["/robots.txt"] = status(404)
        response = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nabcd"
        for i in range(STUCK):
            server.routes[f"/slow/{i}.jpg"] = drip(response, interval=1.0, for_at_most=60.0)
        server.routes["/done.jpg"] = image(b"\xff\xd8earlier\xff\xd9", "image/jpeg")

        # An earlier, complete run left committed output: it must survive the killed run.
        fast = settings(per_host_interval_s=0.0)
        pairs = write_pairs(storage, [pair_row("p-done", server.url("/done.jpg"))])
        _, earlier = run_gather(storage, pairs.data_url, None, fast)
        data_path = storage.strip_protocol(earlier.data_url)
        with open(data_path, "rb") as f:
            committed = f.read()

        pairs = write_pairs(storage, [pair_row(f"p-{i}", server.url(f"/slow/{i}.jpg"), i) for i in range(STUCK)])
        # Neither timeout nor deadline would end these fetches in the test's time: only SIGTERM can.
        downloader = settings(total_timeout_s=600.0, read_timeout_s=30.0, per_host_interval_s=0.0).model_dump()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(profile_path), pairs.data_url, mode, json.dumps(downloader)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            preexec_fn=default_signals,  # a pytest started in the background ignores SIGINT, and "keyboard" would inherit SIG_IGN
        )
        deadline = time.monotonic() + 60
        while len([p for p in server.paths() if p.startswith("/slow/")]) < 4:  # every worker is stuck in a drip
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the workers never reached the server"
            time.sleep(0.05)
        time.sleep(1.5)  # a couple of bytes in: well inside the headers

        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        try:
            out, err = child.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"still running 15 s after SIGTERM:\n{err[-3000:]}")
        stopped = time.monotonic() - sent

        assert stopped < 10.0, stopped
        assert child.returncode != 0
        assert "running" in out and "finished" not in out
        interrupted = "KeyboardInterrupt" if mode == "keyboard" else "DagsterExecutionInterruptedError"
        assert interrupted in err, err[-3000:]
        # the queued fetches were dropped, not started after the signal
        assert len([p for p in server.paths() if p.startswith("/slow/")]) <= 8
        # nothing half-written was committed, and no temporary file is left
        with open(data_path, "rb") as f:
            assert f.read() == committed
        assert [p for p in storage.fs.find(storage.root_path) if ".tmp-" in p] == []
        # no cancelled fetch went into the download cache: the next run tries them all again
        cached = storage.fs.find(storage.path(CACHE_DIR))
        assert len([p for p in cached if p.endswith(".json")]) == 1  # the earlier run's /done.jpg
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        server.close()
