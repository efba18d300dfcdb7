"""The manifest catalog (issue 18 §2): global steps read one catalog, not a file per shard.

Three measurements, old code (loaded from git at BASE, before the catalog) beside new:

1. ``asagi report`` at --shards simulated shards (default 90,000; 12 per-shard assets, so
   about 1.08M catalog entries, the catalog in its worst shape for readers: MERGE_AT - 1
   compacted files and COMPACT_AT - 1 log entries), a subprocess each, wall time and peak
   RSS. Targets: summary at most 30 s and 1 GB. The old report needs one JSON and one
   rejection file per asset partition and takes minutes past 5k shards, so it runs at
   --old-shards (default 2,000) only, beside the new one on the same root.
2. Storage requests per shard of each global step (report, re-sync plan, the hash index's
   manifest read, the mixture's input read) on a moto S3 server at --s3-shards (default
   1,000), counted by the server itself: a WSGI wrapper around moto's app sees every
   request whichever client sends it (s3fs, DuckDB through fsspec, boto3). Target: at
   most 2 per shard.
3. The write path at --old-shards: what a manifest commit costs with its catalog entry and
   the compactions it triggers.

    python -m benchmarks.bench_catalog [--shards 90000] [--old-shards 2000] [--s3-shards 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from asagi_dagster import catalog
from asagi_dagster.storage import REJECTION_SCHEMA, Manifest, ModelManifest, S3Settings, Storage, StorageSettings

REPO = Path(__file__).resolve().parent.parent
BASE = "21d5f75"  # the last commit before the catalog: the "old" readers
BUCKET = "bench-catalog"
TARGET_SECONDS, TARGET_RSS_MIB, TARGET_REQUESTS = 30, 1024, 2

# A realistic mix: the per-shard assets of a crawl shard with the reasons they reject for.
SHARD_ASSETS = {
    "web_documents": ["non_html", "http_status", "undecodable_html", "page_noai", "corrupt_warc"],
    "web_images": ["not_an_image", "image_unreadable"],
    "image_text_pairs": ["pair_text_missing", "no_alt_text"],
    "interleaved_documents": ["no_images"],
    "pair_images": ["http_status", "robots_disallowed", "x_robots_noai", "timeout"],
    "screened_pairs": ["text_length", "ascii_only", "harmful_keywords", "image_size", "aspect_ratio", "monochrome"],
    "filtered_pairs": ["duplicate_image", "near_duplicate_image", "benchmark_overlap", "document_image"],
    "reference_texts": ["no_sentence"],
    "english_captions": ["not_english", "too_short", "prompt_echo"],
    "ja_captions": ["not_japanese", "too_short", "too_long", "prompt_echo", "bad_format"],
    "synthetic_vqa": ["not_japanese", "bad_format", "empty"],
    "synthetic_mcvqa": ["bad_format", "duplicate_output"],
}
RULES = ["text_length", "ascii_only", "harmful_keywords", "image_size", "aspect_ratio", "monochrome"]
SOURCE_ASSET, FINAL_ASSET = "web_documents", "pair_images"
MIXTURE_WEIGHTS = {"web_alt_texts": 1.0, "reference_texts": 1.0, "ja_captions": 1.0, "synthetic_vqa": 1.0, "synthetic_mcvqa": 1.0}


def shard_key(i: int) -> str:
    # Common Crawl's names, folders joined by "__" as the inbox does: about 110 characters.
    return f"crawl-data__CC-MAIN-2025-08__segments__1738000000.{i % 100:02d}__warc__CC-MAIN-20250201-{i:05d}.warc.gz"


def fingerprint(i: int) -> str:
    return f"{1_000_000_000 + i}:1738{i:06d}.0"


def manifest_for(storage: Storage, asset: str, i: int) -> Manifest:
    """What ``asset`` commits for shard ``i``: plausible counts, reasons, rule stats, source."""
    key, reasons = shard_key(i), SHARD_ASSETS[asset]
    by_reason = {r: 1 + (i * 7 + n * 13) % 50 for n, r in enumerate(reasons)}
    rows_out = 500 + (i * 31) % 2000
    source = {"shard_url": f"s3://commoncrawl/{key.replace('__', '/')}", "fingerprint": fingerprint(i)} if asset in ("web_documents", "web_images") else {}
    if asset == "web_documents":
        source |= {"warc_layout": "gzip_members", "record_starts": str(3 * rows_out), "record_starts_in_rejected_spans": "0"}
    rule_stats = []
    if asset == "screened_pairs":
        checked = rows_out + sum(by_reason.values())
        for rule in RULES:
            rule_stats.append({"rule": rule, "checked": checked, "rejected": by_reason[rule], "passed": checked - by_reason[rule]})
            checked -= by_reason[rule]
    return Manifest.model_construct(
        asset=asset,
        partition=key,
        schema_version=1,
        data_url=storage.url(f"{storage.asset_dir(asset, key)}/data.parquet"),
        rejections_url=storage.url(f"{storage.rejections_dir(asset, key)}/data.parquet"),
        rows_in=rows_out + sum(by_reason.values()),
        rows_out=rows_out,
        rows_rejected=sum(by_reason.values()),
        rejected_by_reason=by_reason,
        source=source,
        rule_stats=rule_stats,
    )


def all_manifests(storage: Storage, shards: int):
    for i in range(shards):
        for asset in SHARD_ASSETS:
            yield manifest_for(storage, asset, i)
    yield ModelManifest(
        asset="vlm_stage1",
        model_url=storage.url(storage.path("vlm_stage1", "all", "model")),
        stage="stage1",
        steps=1000,
        examples=shards * 400,
        mixture_url=storage.url(storage.path("stage1_mixture", "all", "data.parquet")),
        final_loss=1.25,
    )


# --- catalog layouts ------------------------------------------------------------------
def write_catalog(storage: Storage, shards: int, compacted_files: int = catalog.MERGE_AT - 1, log_entries: int = catalog.COMPACT_AT - 1) -> int:
    """A catalog of ``shards`` shards as readers find it at worst: ``compacted_files``
    compacted files, and ``log_entries`` log entries (re-commits of the last manifests)."""
    manifests = list(all_manifests(storage, shards))
    now = time.time_ns()
    per_file = -(-len(manifests) // compacted_files)
    for start in range(0, len(manifests), per_file):
        chunk = manifests[start : start + per_file]
        rows = [catalog.entry_row(m, now, f"{start + n:032x}") for n, m in enumerate(chunk)]
        table = pa.Table.from_pylist(rows, schema=catalog.ENTRY_SCHEMA)
        catalog._write_entries(storage, f"{catalog.compacted_dir(storage)}/{now:020d}-{start:032x}.parquet", table)
    for n, manifest in enumerate(manifests[-log_entries:] if log_entries else []):
        catalog._write_entries(
            storage,
            f"{catalog.log_dir(storage)}/{now + n + 1:020d}-{n:032x}.parquet",
            pa.Table.from_pylist([catalog.entry_row(manifest, now + n + 1, f"{n:032x}")], schema=catalog.ENTRY_SCHEMA),
        )
    catalog.mark_built(storage, len(manifests))
    return len(manifests)


def write_manifest_files(storage: Storage, shards: int) -> int:
    """The files the old readers need: each manifest JSON and a rejection file (one
    template per asset; the old report joins them all)."""
    templates = {}
    for asset, reasons in SHARD_ASSETS.items():
        sink = io.BytesIO()
        pq.write_table(
            pa.Table.from_pylist([{"record_id": f"r{n}", "reason": r, "detail": None} for n, r in enumerate(reasons)], schema=REJECTION_SCHEMA), sink
        )
        templates[asset] = sink.getvalue()
    files, written = {}, 0
    for manifest in all_manifests(storage, shards):
        files[storage.manifest_path(manifest.asset, manifest.partition)] = json.dumps(manifest.model_dump(), indent=1).encode()
        if isinstance(manifest, Manifest):
            files[storage.strip_protocol(manifest.rejections_url)] = templates[manifest.asset]
        if len(files) >= 2000:
            written += _pipe(storage, files)
    return written + _pipe(storage, files)


def _pipe(storage: Storage, files: dict) -> int:
    if storage.is_local:
        for path in files:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    storage.fs.pipe(files)  # concurrent PUTs on S3
    n = len(files)
    files.clear()
    return n


# --- old readers: the modules at BASE, loaded from git --------------------------------------
def old_module(path: str, name: str, replace: dict[str, types.ModuleType] = {}) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{BASE}:{path}"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{BASE}:{path}"
    sys.modules[name] = module  # dataclasses look their module up
    saved = {k: sys.modules.get(k) for k in replace}
    sys.modules.update(replace)  # e.g. the old report imports the old query module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            sys.modules[k] = v
    return module


def old_readers() -> types.SimpleNamespace:
    query = old_module("asagi_dagster/query.py", "old_query")
    return types.SimpleNamespace(
        report=old_module("asagi_dagster/report.py", "old_report", {"asagi_dagster.query": query}),
        inbox=old_module("asagi_dagster/web/inbox.py", "old_inbox"),
        mixture=old_module("asagi_dagster/train/mixture.py", "old_mixture"),
        dedup=old_module("asagi_dagster/filters/dedup.py", "old_dedup"),
    )


# --- the global steps, old and new ----------------------------------------------------------
def steps(storage: Storage, shards: int, old: types.SimpleNamespace | None) -> dict:
    """name -> (function of nothing, shards it reads); old readers when ``old`` is given."""
    from asagi_dagster.filters import dedup
    from asagi_dagster.report import summary_report
    from asagi_dagster.train import mixture
    from asagi_dagster.web import inbox

    keys = [shard_key(i) for i in range(shards)]
    files = [inbox.ShardFile(k, f"s3://commoncrawl/{k}", fingerprint(i)) for i, k in enumerate(keys)]
    if old is None:

        def resync():
            ingested = inbox._ingested(storage, SOURCE_ASSET, FINAL_ASSET)
            return [f.key for f in files if inbox._out_of_sync(ingested, f)]

        return {
            "report (summary)": lambda: summary_report(storage, None),
            "re-sync plan": resync,
            "hash index manifest read": lambda: dedup.screened_manifests(storage),
            "mixture input read": lambda: mixture.mixture_inputs(storage, keys, {}, [], MIXTURE_WEIGHTS),
        }
    return {
        "report (summary)": lambda: (old.report.shard_report(storage, None), old.report.model_report(storage)),
        "re-sync plan": lambda: [f.key for f in files if old.inbox._out_of_sync(storage, f, SOURCE_ASSET, FINAL_ASSET)],
        "hash index manifest read": lambda: old.dedup.screened_manifests(storage),
        "mixture input read": lambda: old.mixture.mixture_inputs(storage, keys, {}, [], MIXTURE_WEIGHTS),
    }


# --- request counting on moto ------------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args) -> None:  # a line per request would drown the figures
        pass


class CountingMotoServer(ThreadedMotoServer):
    """moto's S3 server on 127.0.0.1 that counts the requests it serves, by method."""

    def __init__(self):
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ, start_response):
            with self._lock:
                self.requests[environ["REQUEST_METHOD"]] += 1
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, counted, True, request_handler=_QuietHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def count(self, step) -> tuple[int, Counter]:
        """Requests (total, by method) the server saw while ``step()`` ran."""
        with self._lock:
            self.requests.clear()
        step()
        with self._lock:
            return sum(self.requests.values()), Counter(self.requests)


def s3_storage(endpoint: str, prefix: str) -> Storage:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    return Storage(StorageSettings(root=f"s3://{BUCKET}/{prefix}", s3=S3Settings(endpoint_url=endpoint)))


# The old report makes about 350 requests per shard (a HEAD storm through DuckDB's fsspec
# for every JSON and rejection file): at 1,000 shards that is hours on moto, so it is
# counted on a smaller root.
OLD_REPORT_MAX_SHARDS = 200


def requests_per_shard(shards: int, with_old: bool = True, only: set[str] | None = None) -> list[dict]:
    """Each global step's requests per shard on a moto server, new (and old) readers;
    ``only`` these steps when given."""
    import boto3

    server = CountingMotoServer()
    server.start()
    try:
        endpoint = server.endpoint()
        storage = s3_storage(endpoint, f"data-{shards}")  # moto keeps buckets across servers in one process
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        write_catalog(storage, shards)
        if with_old:
            write_manifest_files(storage, shards)
        new, old = steps(storage, shards, None), steps(storage, shards, old_readers()) if with_old else {}
        if shards > OLD_REPORT_MAX_SHARDS:
            old.pop("report (summary)", None)
        results = []
        for name, step in new.items():
            if only is not None and name not in only:
                continue
            total, by_method = server.count(step)
            row = {"step": name, "shards": shards, "new_requests": total, "new_per_shard": total / shards, "new_by_method": dict(by_method)}
            if name in old:
                total, by_method = server.count(old[name])
                row |= {"old_requests": total, "old_per_shard": total / shards, "old_by_method": dict(by_method)}
            results.append(row)
        return results
    finally:
        server.stop()


# --- the report as a subprocess ------------------------------------------------------------------
def write_profile(directory: Path, root: str, database: str | None = None) -> Path:
    profile = {
        "profile": "bench-catalog",
        "storage": {"root": root, "duckdb_path": database},
        "sources": {"web": {"inbox": str(directory / "inbox")}},
        "dagster": {"home": str(directory / "dagster_home")},
    }
    path = directory / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


# Runs a module as __main__ and, at exit, prints the process's peak RSS since exec
# (VmHWM). Not ru_maxrss: Linux carries that over exec from the forking process, so a
# child of this (large) benchmark process would report the benchmark's own size.
_PEAK_WRAPPER = """
import atexit, runpy, sys
def peak():
    with open('/proc/self/status') as status:
        sys.stderr.write(next(line for line in status if line.startswith('VmHWM:')))
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def run_measured(module_args: list[str], env: dict) -> dict:
    """Wall time and peak RSS of ``python -m <module_args>`` in a subprocess."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *module_args], env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{module_args} failed: {done.stderr[-2000:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1].split()[1])
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak_kib / 1024), "output_bytes": len(done.stdout)}


def report_child(root: str, which: str) -> None:
    """Run a report in this (fresh) process: ``old`` from BASE's code, ``new`` from ours."""
    storage = Storage(StorageSettings(root=root))
    if which == "old":
        old = old_readers()
        rows = old.report.shard_report(storage, None)
        print(len(old.report.format_table(rows, old.report.model_report(storage))))
    else:
        raise ValueError(which)


def report_figures(directory: Path, root: str, with_old: bool, shards_table: bool = True) -> dict:
    env = {**os.environ, "ASAGI_CONFIG": str(write_profile(directory, root)), "PYTHONPATH": str(REPO)}
    figures = {"new summary": run_measured(["asagi_cli", "report"], env)}
    # As the shipped local profile runs it: the report database also gets its tables.
    with_database = {**env, "ASAGI_CONFIG": str(write_profile(directory, root, str(directory / "report.duckdb")))}
    figures["new summary + database"] = run_measured(["asagi_cli", "report"], with_database)
    env["ASAGI_CONFIG"] = str(write_profile(directory, root))
    if shards_table:
        figures["new --shards"] = run_measured(["asagi_cli", "report", "--shards"], env)
    if with_old:
        figures["old per-shard report"] = run_measured(["benchmarks.bench_catalog", "--report-child", root, "old"], env)
    return figures


def write_path(directory: Path, shards: int) -> dict:
    """Manifest commits through Storage.write_manifest (JSON + catalog entry + the
    compactions the log triggers) against plain JSON writes, on a local root."""
    storage = Storage(StorageSettings(root=str(directory / "writes")))
    manifests = list(all_manifests(storage, shards))
    start = time.perf_counter()
    for manifest in manifests:
        storage.write_manifest(manifest)
    with_catalog = time.perf_counter() - start
    start = time.perf_counter()
    for manifest in manifests:
        storage.write_json(storage.manifest_path(manifest.asset, manifest.partition), manifest.model_dump())
    json_only = time.perf_counter() - start
    left = catalog._list(storage, catalog.log_dir(storage)), catalog._list(storage, catalog.compacted_dir(storage))
    return {
        "commits": len(manifests),
        "ms_per_commit_with_catalog": round(1000 * with_catalog / len(manifests), 2),
        "ms_per_commit_json_only": round(1000 * json_only / len(manifests), 2),
        "log_entries_left": len(left[0]),
        "compacted_files_left": len(left[1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="manifest catalog: report time and RSS, storage requests per shard, old beside new")
    parser.add_argument("--shards", type=int, default=90_000, help="simulated shards for the report target")
    parser.add_argument("--old-shards", type=int, default=2_000, help="shards for old vs new report and the write path (0: skip)")
    parser.add_argument("--s3-shards", type=int, default=1_000, help="shards for the request counts on moto (0: skip)")
    parser.add_argument("--report-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_child:
        report_child(*args.report_child)
        return 0

    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        directory = Path(tmp)
        if args.old_shards:
            root = str(directory / f"old-{args.old_shards}" / "data")
            storage = Storage(StorageSettings(root=root))
            write_catalog(storage, args.old_shards)
            write_manifest_files(storage, args.old_shards)
            print(f"\n== asagi report, old beside new, {args.old_shards} shards (local root) ==")
            for name, figure in report_figures(directory, root, with_old=True).items():
                print(f"{name:<24} {figure['seconds']:>8} s {figure['peak_rss_mib']:>7} MiB peak RSS")
            print(f"\n== manifest commits, {args.old_shards} shards (local root) ==")
            print(json.dumps(write_path(directory, args.old_shards)))
        if args.shards:
            root = str(directory / f"new-{args.shards}" / "data")
            start = time.perf_counter()
            entries = write_catalog(Storage(StorageSettings(root=root)), args.shards)
            print(
                f"\n== asagi report, {args.shards} shards: {entries} catalog entries in {catalog.MERGE_AT - 1} compacted files + "
                f"{catalog.COMPACT_AT - 1} log entries (written in {time.perf_counter() - start:.0f} s) =="
            )
            figures = report_figures(directory, root, with_old=False)
            for name, figure in figures.items():
                print(f"{name:<24} {figure['seconds']:>8} s {figure['peak_rss_mib']:>7} MiB peak RSS")
            summary = figures["new summary"]
            met = summary["seconds"] <= TARGET_SECONDS and summary["peak_rss_mib"] <= TARGET_RSS_MIB
            ok &= met
            print(f"target: summary <= {TARGET_SECONDS} s and <= {TARGET_RSS_MIB} MiB: {'met' if met else 'NOT MET'}")
            storage = Storage(StorageSettings(root=root))
            print("in-process, new readers:")
            for name, step in steps(storage, args.shards, None).items():
                start = time.perf_counter()
                step()
                print(f"  {name:<26} {time.perf_counter() - start:>7.2f} s")
            start = time.perf_counter()
            merged = catalog.compact(storage, merge_all=True)
            print(f"  compaction merging all     {time.perf_counter() - start:>7.2f} s ({merged.entries} entries)")
        if args.s3_shards:
            print(f"\n== storage requests per shard read, moto S3, {args.s3_shards} shards ==")
            print(f"{'step':<26} {'old':>8} {'new':>8}   new by method")
            rows = requests_per_shard(args.s3_shards)
            if args.s3_shards > OLD_REPORT_MAX_SHARDS:
                small = requests_per_shard(100, only={"report (summary)"})[0]
                rows[0] |= {"old_per_shard": small["old_per_shard"], "note": "old counted at 100 shards"}
            for row in rows:
                met = row["new_per_shard"] <= TARGET_REQUESTS
                ok &= met
                print(
                    f"{row['step']:<26} {row.get('old_per_shard', float('nan')):>8.2f} {row['new_per_shard']:>8.3f}   {row['new_by_method']}"
                    f"{'' if met else '  NOT MET'}  {row.get('note', '')}"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
