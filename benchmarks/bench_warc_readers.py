"""WARC reading alone: warcio (the baseline of the ingest-rate target) versus FastWARC
(what the project reads with since issue 17), on the shard the ingest-rate benchmark
reads. Not a target of its own.

    python -m benchmarks.bench_warc_readers [--pages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

from benchmarks.make_shard import make_shard


def read_warcio(path: Path) -> int:
    """Every record with its HTTP headers parsed and its payload read, as warcio does it."""
    records = 0
    with open(path, "rb") as f:
        for record in ArchiveIterator(f):
            records += 1
            record.content_stream().read()
    return records


def read_fastwarc(path: Path) -> int:
    """The same with FastWARC: HTTP headers parsed, every payload read."""
    from fastwarc.warc import ArchiveIterator as FastIterator

    records = 0
    with open(path, "rb") as f:
        for record in FastIterator(f, parse_http=True):
            records += 1
            record.reader.read()
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description="seconds to read a WARC shard: warcio versus FastWARC")
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    try:
        import fastwarc  # noqa: F401
    except ImportError:
        print("FastWARC is not installed: pip install fastwarc", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-readers-") as tmp:
        path = Path(tmp) / "bench-00000.warc.gz"
        made = make_shard(path, args.pages)
        print(f"shard: {made['pages']} pages, {made['records']} records, {made['bytes'] / 2**20:.1f} MiB")
        ratios = []
        for round_ in range(args.rounds):
            readers = (read_warcio, read_fastwarc) if round_ % 2 == 0 else (read_fastwarc, read_warcio)
            seconds = {}
            for read in readers:
                start = time.perf_counter()
                assert read(path) == made["records"]
                seconds[read.__name__] = time.perf_counter() - start
            ratios.append(seconds["read_warcio"] / seconds["read_fastwarc"])
            print(f"round {round_ + 1}: warcio {seconds['read_warcio']:.2f} s, FastWARC {seconds['read_fastwarc']:.2f} s, FastWARC {ratios[-1]:.2f}x faster")
    print(f"FastWARC / warcio reading rate, median of {args.rounds} rounds: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
