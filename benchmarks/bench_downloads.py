"""Image download rate: pair_images' download path against img2dataset 1.47.0.

Both download the same URLs from one loopback HTTP server (a separate process, so
neither side shares an interpreter with it) that answers every request after
``--latency`` seconds (50 ms by default). The URLs are spread round-robin over
``--hosts`` addresses, 127.0.0.1 .. 127.0.0.N, one listening socket each on the same
port, so "one host" means what it means to a crawler: one address, its own robots.txt
and its own per-host limits. Images are small real JPEGs and PNGs made with Pillow,
one per URL; every 40th is served with ``X-Robots-Tag: noai`` (both sides refuse
those, img2dataset by its default ``disallowed_header_directives``).

Ours: ``gather_pair_images`` over an ``image_text_pairs`` Parquet of the URLs, with the
real ``Fetcher``: robots.txt fetched and obeyed per host, noai refused, every address
checked (127.0.0.0/8 allow-listed, as the tests do), results written to the
``pair_images`` Parquet and to the download cache under a fresh storage root.
img2dataset: ``download()`` with one process of ``--concurrency`` threads, no
re-encoding (``disable_all_reencoding``, so it stores the bytes as fetched), no EXIF,
sha256 as ours computes, Parquet output. It runs in its own virtualenv
(``benchmarks/.venv-img2dataset``, made on first use with ``pip install
img2dataset==1.47.0``): it never becomes a dependency of the project.

img2dataset keeps no per-host limits, so the target compares at equal politeness:
ours with ``per_host_interval_s`` 0 and a per-host connection cap of at least the
concurrency. ``--interval`` shows the cost of our default politeness beside it.

    python -m benchmarks.bench_downloads [--urls 2000] [--hosts 8] [--concurrency 16] [--rounds 3]

Target (issue 18 section 4): ours at least 1.0x img2dataset's images/s (median ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

TARGET = 1.0
VENV = Path(__file__).resolve().parent / ".venv-img2dataset"
IMG2DATASET = "img2dataset==1.47.0"
NOAI_EVERY = 40
ROBOTS = b"User-agent: *\nDisallow: /private/\n"


# --- the loopback image server (runs in its own process: --serve) -------------------------


def make_images(count: int, seed: int = 18) -> list[tuple[bytes, str]]:
    """``count`` small real images, alternately JPEG and PNG, each different."""
    from PIL import Image

    rng = random.Random(seed)
    images = []
    for index in range(count):
        side = rng.randrange(48, 129)
        picture = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        picture.putpixel((index % side, (index // side) % side), (rng.randrange(256), 0, 255))
        buffer = io.BytesIO()
        fmt, content_type = ("JPEG", "image/jpeg") if index % 2 == 0 else ("PNG", "image/png")
        picture.save(buffer, format=fmt)
        images.append((buffer.getvalue(), content_type))
    return images


class ImageServer:
    """HTTP/1.1 with keep-alive; every response after ``latency`` seconds. Counts requests,
    robots.txt requests and the most requests in flight at once, for ``/_stats``."""

    def __init__(self, images: list[tuple[bytes, str]], latency: float):
        self.images, self.latency = images, latency
        self.reset()

    def reset(self) -> None:
        self.requests = self.robots = self.in_flight = self.peak = 0
        self.first = self.last = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode("latin-1")
                if target.startswith("/_stats"):
                    body = json.dumps(self.stats()).encode()
                    if target == "/_stats/reset":
                        self.reset()
                    writer.write(_response(200, body, "application/json"))
                else:
                    await self.serve(target, writer)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def serve(self, target: str, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        self.first = self.first or now
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            if target == "/robots.txt":
                self.robots += 1
                writer.write(_response(200, ROBOTS, "text/plain"))
                return
            name = target.rsplit("/", 1)[-1].split(".")[0]
            if not (target.startswith("/img/") and name.isdigit() and int(name) < len(self.images)):
                writer.write(_response(404, b"not found", "text/plain"))
                return
            body, content_type = self.images[int(name)]
            extra = [("X-Robots-Tag", "noai")] if int(name) % NOAI_EVERY == 0 else []
            writer.write(_response(200, body, content_type, extra))
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()

    def stats(self) -> dict:
        span = (self.last - self.first) if self.first and self.last else 0.0
        return {"requests": self.requests, "robots": self.robots, "peak_in_flight": self.peak, "span_s": span}


def _response(status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] = ()) -> bytes:
    reason = {200: "OK", 404: "Not Found"}[status]
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def _serve(urls: int, hosts: int, latency: float) -> None:
    server = ImageServer(make_images(urls), latency)
    first = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=1024)
    port = first.sockets[0].getsockname()[1]
    for index in range(2, hosts + 1):
        await asyncio.start_server(server.handle, f"127.0.0.{index}", port, backlog=1024)
    print(port, flush=True)
    # Serve until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_server(urls: int, hosts: int, latency: float) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_downloads", "--serve", "--urls", str(urls), "--hosts", str(hosts), "--latency", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, int(process.stdout.readline())


def server_stats(port: int, reset: bool = False) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats{'/reset' if reset else ''}", timeout=10) as response:
        return json.loads(response.read())


def image_urls(count: int, hosts: int, port: int, clustered: bool = False) -> list[str]:
    """URLs spread over the hosts round-robin, or ``clustered``: each host's URLs one run
    after another, as a shard lists them (a page's images mostly come from one host)."""
    per_host = math.ceil(count / hosts)
    host = (lambda index: index // per_host) if clustered else (lambda index: index % hosts)
    return [f"http://127.0.0.{host(index) + 1}:{port}/img/{index}.{'jpg' if index % 2 == 0 else 'png'}" for index in range(count)]


# --- ours ------------------------------------------------------------------------------


def run_ours(urls: list[str], root: Path, concurrency: int, interval: float, connections: int) -> tuple[int, float, float]:
    """Images stored, wall seconds and CPU seconds (every thread) of ``gather_pair_images``
    over ``urls``."""
    from asagi_dagster.storage import StageWriter, Storage, StorageSettings
    from asagi_dagster.web import schemas
    from asagi_dagster.web.fetch import Fetcher
    from asagi_dagster.web.pair_images import gather_pair_images
    from asagi_dagster.web.settings import DownloaderSettings

    storage = Storage(StorageSettings(root=str(root)))
    shard = "bench"
    with StageWriter(storage, "image_text_pairs", shard, schemas.IMAGE_TEXT_PAIRS, schemas.IMAGE_TEXT_PAIRS_VERSION) as pairs:
        for index, url in enumerate(urls):
            pairs.count_in()
            pairs.write(
                {
                    "pair_id": f"p{index}",
                    "doc_id": f"d{index // 5}",
                    "shard": shard,
                    "page_url": f"http://127.0.0.1/page{index // 5}.html",
                    "page_title": "page",
                    "image_index": index % 5,
                    "image_url": url,
                    "alt": f"alt {index}",
                    "title": None,
                    "figcaption": None,
                    "text_before": "before",
                    "text_after": "after",
                }
            )
    settings = DownloaderSettings(
        allow_networks=["127.0.0.0/8"],  # the address check still runs on every hop; loopback is allowed, as in the tests
        per_host_interval_s=interval,
        per_host_connections=connections,
        workers=concurrency,
        retries=0,  # img2dataset's default
    )
    started, cpu = time.perf_counter(), time.process_time()
    with (
        StageWriter(storage, "pair_images", shard, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(settings) as fetcher,
    ):
        origins = gather_pair_images(storage, pairs.manifest.data_url, None, out, fetcher, settings.workers)
    return origins["download"], time.perf_counter() - started, time.process_time() - cpu


# --- img2dataset -------------------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import glob, json, resource, sys, time
    from img2dataset import download

    def cpu():  # this process and its pool's, once they are reaped
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))

    if __name__ == "__main__":
        url_list, output, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
        started, cpu_started = time.perf_counter(), cpu()
        download(
            url_list=url_list, input_format="txt", output_folder=output, output_format="parquet",
            processes_count=1, thread_count=threads, number_sample_per_shard=1_000_000,
            resize_mode="no", disable_all_reencoding=True, extract_exif=False, compute_hash="sha256",
            timeout=10, retries=0, enable_wandb=False, distributor="multiprocessing",
        )
        seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
        stats = [json.load(open(p)) for p in glob.glob(output + "/*_stats.json")]
        print(json.dumps({"successes": sum(s["successes"] for s in stats), "seconds": seconds, "cpu": cpu_seconds}))
    """
)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; assert m.version('img2dataset') == '1.47.0'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"making {VENV} with {IMG2DATASET} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", IMG2DATASET], check=True)
    return python


def run_img2dataset(python: Path, urls: list[str], work: Path, concurrency: int) -> tuple[int, float, float]:
    """Images stored, wall seconds and CPU seconds of img2dataset's ``download()`` (timed
    inside its own interpreter, so its imports are not counted; its process pool's start
    and work are)."""
    url_list = work / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    driver = work / "driver.py"
    driver.write_text(_DRIVER)
    done = subprocess.run([str(python), str(driver), str(url_list), str(work / "out"), str(concurrency)], env=env, capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["successes"], result["seconds"], result["cpu"]


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="images/s of pair_images' downloads versus img2dataset 1.47.0")
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=8, help="loopback addresses 127.0.0.1..N the URLs are spread over")
    parser.add_argument("--concurrency", type=int, default=16, help="our workers = img2dataset's thread_count")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each response")
    parser.add_argument("--interval", type=float, default=0.0, help="our per_host_interval_s (img2dataset has none)")
    parser.add_argument("--connections", type=int, default=None, help="our per_host_connections (default: the concurrency, no cap; img2dataset has none)")
    parser.add_argument("--clustered", action="store_true", help="each host's URLs in one run, not round-robin")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.urls, args.hosts, args.latency))
        return 0

    connections = args.connections or args.concurrency
    python = ensure_venv()
    server, port = start_server(args.urls, args.hosts, args.latency)
    urls = image_urls(args.urls, args.hosts, port, args.clustered)
    expected = args.urls - len(range(0, args.urls, NOAI_EVERY))
    print(
        f"{args.urls} URLs over {args.hosts} hosts{' (clustered)' if args.clustered else ''}, "
        f"{args.latency * 1000:.0f} ms per response, concurrency {args.concurrency},"
        f" our per_host_interval_s {args.interval} and per_host_connections {connections}; {expected} images should be stored by each side"
    )
    ratios, ours_rates, theirs_rates = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-downloads-") as tmp:
            for round_ in range(args.rounds):
                order = ("ours", "img2dataset") if round_ % 2 == 0 else ("img2dataset", "ours")
                results = {}
                for side in order:
                    server_stats(port, reset=True)
                    work = Path(tmp) / f"{side}-{round_}"
                    work.mkdir()
                    if side == "ours":
                        stored, seconds, cpu = run_ours(urls, work, args.concurrency, args.interval, connections)
                    else:
                        stored, seconds, cpu = run_img2dataset(python, urls, work, args.concurrency)
                    results[side] = (stored, seconds, cpu, server_stats(port))
                for side, (stored, *_) in results.items():
                    assert stored == expected, f"{side} stored {stored} images, expected {expected}"
                for side, (_, seconds, cpu, seen) in results.items():
                    print(
                        f"round {round_ + 1}, {side:>11}: {expected / seconds:,.0f} images/s ({seconds:.2f} s);"
                        f" {cpu / expected * 1000:.2f} ms CPU per image; while requests arrived: {expected / seen['span_s']:,.0f} images/s"
                        f" ({seen['requests']} requests, {seen['robots']} of them robots.txt, at most {seen['peak_in_flight']} at once)"
                    )
                ours_rates.append(expected / results["ours"][1])
                theirs_rates.append(expected / results["img2dataset"][1])
                ratios.append(ours_rates[-1] / theirs_rates[-1])
                print(f"round {round_ + 1}: ratio {ratios[-1]:.2f}x")
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    ratio = statistics.median(ratios)
    print(f"ours: median {statistics.median(ours_rates):,.0f} images/s; img2dataset: median {statistics.median(theirs_rates):,.0f} images/s")
    print(f"ratio ours/img2dataset, median of {args.rounds} rounds: {ratio:.2f}x  target: at least {TARGET}x  -> {'PASS' if ratio >= TARGET else 'FAIL'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
