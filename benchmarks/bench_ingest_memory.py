"""Web ingest memory: peak RSS on a small shard versus one 10x larger.

Target (issue "foundation"): the big shard's peak at most 1.2x the small one's, i.e.
memory does not grow with the shard. Each ingest runs in a fresh subprocess, because
ru_maxrss is a process-lifetime peak: shard generation, the other run and allocator
state left behind would all leak into one shared process's figure.

    python -m benchmarks.bench_ingest_memory [--pages N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.make_shard import make_shard

TARGET = 1.2
SCALE = 10


def child(path: Path) -> None:
    """Run both ingest steps once and report this process's peak RSS as JSON."""
    from benchmarks.bench_ingest_rate import run_ours

    start = time.perf_counter()
    rows = run_ours(path, path.parent / f"storage-{path.stem}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_kib": peak_kib, "rows_in": rows, "seconds": time.perf_counter() - start}))


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_ingest_memory", "--child", str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="peak RSS of our web ingest, small shard versus 10x larger")
    # 800 pages is ~18 MiB of WARC: more than the storage sinks buffer before a flush
    # (1024 rows or 8 MiB), so the small run already reaches the steady-state working
    # set; a smaller shard would leave those buffers part full and the ratio would
    # measure the batch size. The big shard (~180 MiB) is far above that working set,
    # so an ingest that held the shard would show.
    parser.add_argument("--pages", type=int, default=800, help=f"pages in the small shard; the big one has {SCALE}x")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for label, pages in (("small", args.pages), (f"big ({SCALE}x)", args.pages * SCALE)):
            path = Path(tmp) / f"bench-{label.split()[0]}.warc.gz"
            made = make_shard(path, pages)
            result = measure(path)
            results[label] = result
            rows = ", ".join(f"{k} {v}" for k, v in result["rows_in"].items())
            print(
                f"{label}: {made['bytes'] / 2**20:.0f} MiB WARC, {made['records']} records; "
                f"peak RSS {result['peak_kib'] / 1024:.0f} MiB in {result['seconds']:.0f}s; rows in: {rows}"
            )
            path.unlink()  # never hold both shards on disk

    small, big = (r["peak_kib"] for r in results.values())
    ratio = big / small
    print(f"peak RSS big/small: {ratio:.2f}x  target: at most {TARGET}x  -> {'PASS' if ratio <= TARGET else 'FAIL'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
