"""The incremental image-hash index at crawl scale: build, add one shard, memory.

Simulated screened pairs: N images in shards of 5,000 (90% random 64-bit hashes, 10%
copies of an earlier image with up to 4 bits flipped, and 2% extra rows carrying an
earlier image's bytes from another origin), then one new shard of 5,000 images: 90%
new, 9% near copies of indexed images, 1% the same bytes as indexed web images from a
dataset (which takes the copy over, so those earlier shards' decisions change).

Each measurement runs in a fresh subprocess, because ru_maxrss is a process-lifetime
peak. Printed per N: the bulk build (all N at once, what a first fill or rebuild costs),
adding the new shard to that index, and today's build_hash_index over the same N where
--baseline-sizes asks for it (it is what every new shard costs today), with the growth
between sizes.

    python -m benchmarks.bench_hash_index                          # 1M and 10M, baseline at 100k and 1M
    python -m benchmarks.bench_hash_index --sizes 100000 --baseline-sizes 100000
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

import duckdb
import numpy as np
import pyarrow as pa

SHARD_IMAGES = 5_000
MAX_HAMMING = 4
MEMORY_TARGET_GIB = 4.0


def flipped(rng: np.random.Generator, hashes: np.ndarray, max_bits: int) -> np.ndarray:
    """``hashes`` with up to ``max_bits`` random bits flipped each."""
    flips = np.zeros(len(hashes), dtype=np.uint64)
    for _ in range(max_bits):
        flips ^= np.uint64(1) << rng.integers(0, 64, size=len(hashes)).astype(np.uint64)
    return (hashes.view(np.uint64) ^ flips).view(np.int64)


def write_pairs(con: duckdb.DuckDBPyConnection, rows: pa.Table, folder: Path) -> None:
    """Rows (image, phash, source, origin, shard) -> one Parquet folder per shard."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    con.register("rows", rows)
    con.execute(
        f"""COPY (SELECT sha256('image-' || image) AS image_sha256, image_phash, source, origin_id, shard FROM rows)
            TO '{folder}' (FORMAT parquet, PARTITION_BY (shard), OVERWRITE_OR_IGNORE)"""
    )
    con.unregister("rows")


def make_data(size: int, folder: Path, seed: int = 18) -> None:
    """``size`` images in shards of SHARD_IMAGES under folder/base, the new shard under folder/new."""
    rng = np.random.default_rng(seed)
    fresh = int(size * 0.9)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=size, dtype=np.int64)
    hashes[fresh:] = flipped(rng, hashes[rng.integers(0, fresh, size=size - fresh)], MAX_HAMMING)
    order = rng.permutation(size)  # near copies spread over all shards, not bunched at the end
    images = np.arange(size)[order]
    repeats = rng.integers(0, size, size=size // 50)  # the same bytes from another page
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    base = pa.table(
        {
            "image": np.concatenate([images, repeats]),
            "image_phash": np.concatenate([hashes[order], hashes[repeats]]),
            "source": pa.array(["web"] * (size + len(repeats))),
            "origin_id": np.concatenate([images // 3, repeats + size]).astype(str),
            "shard": np.concatenate([np.arange(size) // SHARD_IMAGES, rng.integers(0, max(1, size // SHARD_IMAGES), size=len(repeats))]),
        }
    )
    write_pairs(con, base, folder / "base")
    del base
    near, same = SHARD_IMAGES * 9 // 100, SHARD_IMAGES // 100
    fresh_new = SHARD_IMAGES - near - same
    near_of, same_of = rng.integers(0, size, size=near), rng.integers(0, size, size=same)
    new_images = np.concatenate([size + np.arange(fresh_new), size * 2 + np.arange(near), same_of])
    new_hashes = np.concatenate(
        [
            rng.integers(-(2**63), 2**63 - 1, size=fresh_new, dtype=np.int64),
            flipped(rng, hashes[near_of], MAX_HAMMING),
            hashes[same_of],
        ]
    )
    sources = ["web"] * (SHARD_IMAGES - same) + ["stair"] * same
    new = pa.table(
        {
            "image": new_images,
            "image_phash": new_hashes,
            "source": sources,
            "origin_id": [f"new-{n}" for n in range(SHARD_IMAGES)],
            "shard": [-1] * SHARD_IMAGES,
        }
    )
    write_pairs(con, new, folder / "new")


def shard_files(folder: Path) -> dict[str, list[str]]:
    return {path.name.split("=", 1)[1]: [str(p) for p in sorted(path.glob("*.parquet"))] for path in sorted(folder.iterdir())}


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)  # KiB on Linux


def child_build(data: Path, database: Path) -> dict:
    from asagi_dagster.filters.hash_index import HashIndex

    shards = shard_files(data / "base")
    start = time.perf_counter()
    index = HashIndex.open(str(database), MAX_HAMMING)
    result = index.add(shards)
    index.con.execute("CHECKPOINT")
    seconds = time.perf_counter() - start
    images = index.image_count()
    index.close()
    return {
        "seconds": seconds,
        "peak_gib": peak_gib(),
        "images": images,
        "shards": len(shards),
        "edges": result.edges_added,
        "database_mib": database.stat().st_size / (1 << 20),
        "phases": result.seconds,
    }


def child_add(data: Path, database: Path) -> dict:
    from asagi_dagster.filters.hash_index import HashIndex

    start = time.perf_counter()
    index = HashIndex.open(str(database), MAX_HAMMING)
    opened = time.perf_counter() - start
    result = index.add({"new": shard_files(data / "new")["-1"]})
    seconds = time.perf_counter() - start  # the add and its commit
    rows = index.shard_table("new").num_rows  # what filtered_pairs of the new shard reads
    shard_rows_seconds = time.perf_counter() - start - seconds
    index.close()
    return {
        "seconds": seconds,
        "open_seconds": opened,
        "peak_gib": peak_gib(),
        "images_added": result.images_added,
        "edges": result.edges_added,
        "changed_shards": len(result.changed_shards),
        "shard_rows": rows,
        "shard_rows_seconds": shard_rows_seconds,
        "phases": result.seconds,
    }


def child_baseline(data: Path) -> dict:
    from asagi_dagster.filters.dedup import build_hash_index

    urls = [url for files in shard_files(data / "base").values() for url in files]
    start = time.perf_counter()
    table = build_hash_index(duckdb.connect(), urls, MAX_HAMMING)
    return {"seconds": time.perf_counter() - start, "peak_gib": peak_gib(), "images": table.num_rows}


def measure(step: str, data: Path, database: Path, timeout: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_hash_index", "--child", step, str(data), str(database)]
    try:
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": timeout}
    except subprocess.CalledProcessError as exc:
        return {"failed": exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(size: int, step: str, figures: dict) -> str:
    if "seconds" not in figures:
        return f"{size:>11,} {step:<9} {figures}"
    extra = {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items() if k not in ("seconds", "peak_gib")}
    return f"{size:>11,} {step:<9} {figures['seconds']:8.1f} s  {figures['peak_gib']:5.2f} GiB  {extra}"


def growth(results: dict, step: str, key: str) -> str:
    sizes = sorted(size for size in results if key in results[size].get(step, {}))
    if len(sizes) < 2:
        return ""
    small, big = sizes[0], sizes[-1]
    ratio = results[big][step][key] / results[small][step][key]
    return f"{step} {key}: x{ratio:.1f} for x{big / small:.0f} images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per measured step")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data and databases go (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "DATA", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, data, database = args.child
        figures = {
            "build": lambda: child_build(Path(data), Path(database)),
            "add": lambda: child_add(Path(data), Path(database)),
            "baseline": lambda: child_baseline(Path(data)),
        }[step]()
        print(json.dumps(figures))
        return
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hash-index-", dir=args.workdir) as work:
        print(f"{'images':>11} {'step':<9} {'time':>10}  {'peak RSS':>9}  details", flush=True)
        for size in sorted(set(args.sizes) | set(args.baseline_sizes)):
            data, database = Path(work) / f"data-{size}", Path(work) / f"index-{size}.duckdb"
            start = time.perf_counter()
            make_data(size, data)
            print(f"{size:>11,} (data made in {time.perf_counter() - start:.0f} s)", flush=True)
            steps = (["build", "add"] if size in args.sizes else []) + (["baseline"] if size in args.baseline_sizes else [])
            for step in steps:
                results.setdefault(size, {})[step] = figures = measure(step, data, database, args.timeout)
                print(report(size, step, figures), flush=True)
            _remove_tree(data)
            for leftover in Path(work).glob(f"index-{size}.duckdb*"):
                leftover.unlink()
    for step in ("build", "add", "baseline"):
        for key in ("seconds", "peak_gib"):
            line = growth(results, step, key)
            if line:
                print(line)
    biggest = max(args.sizes)
    peak = max(results[biggest][step].get("peak_gib", float("inf")) for step in ("build", "add"))
    print(f"peak RSS at {biggest:,} images: {peak:.2f} GiB (target <= {MEMORY_TARGET_GIB} GiB): {'PASS' if peak <= MEMORY_TARGET_GIB else 'FAIL'}")


def _remove_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
