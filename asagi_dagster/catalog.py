"""The manifest catalog: every manifest commit as a row, so a global step reads one table.

Each stage commits ``<root>/<asset>/<partition>/_manifest.json``, the IO manager's source
of truth. Reading one JSON per asset and partition costs requests per file, which at a
crawl's scale (90,000 shards, a dozen assets each) is where global steps (the report,
the re-sync schedule, mixtures, index rebuilds) spend their time. So every manifest is
also recorded here: by ``Storage.write_manifest`` as it is committed, or, for a step over
many files, all of the step's in one entry file as the step ends (assets/shards.py):

    <root>/_catalog/log/<ns>-<uuid>.parquet        one file per append (one row per manifest)
    <root>/_catalog/compacted/<ns>-<uuid>.parquet  entries folded together

A root whose catalog was never built (one written before it existed) is cataloged from
its manifest files on the first read (``ensure_built``).

S3 has neither appends nor locks, so correctness rests on three rules:

- every file is immutable and committed atomically (``Storage.commit``); an entry carries
  its own order (``committed_ns``, then ``entry_id``), so the latest entry per (asset,
  partition) is the same whichever files hold it and however often it is repeated;
- a compaction commits its output before it removes its inputs, and removes only files it
  read in full: two compactions at once leave duplicates, never gaps;
- a reader lists the log before the compacted files; a listed file that is gone when read
  was folded meanwhile (its entries are in a compacted file committed before it went), so
  the reader starts over.

The log is compacted by the writer that finds it at ``COMPACT_AT`` entries or more, and by
``asagi catalog compact``: readers then fetch at most about ``COMPACT_AT`` small files
plus at most ``MERGE_AT`` compacted ones, however many shards there are. A crash between
the manifest's commit and its entry leaves the catalog behind the manifests: ``check``
finds that and ``rebuild`` rewrites the catalog from the manifest files (both O(N)).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from asagi_dagster.storage import MANIFEST_FILE, Manifest, ModelManifest, Storage, discard

log = logging.getLogger(__name__)

CATALOG_DIR = "_catalog"
# A log this long is folded by the writer that finds it so: readers fetch one small file
# per log entry, so this bounds their requests (about 0.01 per shard at 90k shards).
COMPACT_AT = 500
# Compacted files are merged into one when a compaction would leave more than this many:
# each is a few requests for every reader, and merging rewrites the whole catalog, so
# merges are rare (every MERGE_AT x COMPACT_AT commits).
MERGE_AT = 8
# Rounds a reader restarts when a listed file was folded away under it.
READ_ATTEMPTS = 8

_ENTRY_NAME = re.compile(r"\d{20}-[0-9a-f]{32}\.parquet")  # not the ".<name>.tmp-<hex>" of local commits

ENTRY_SCHEMA = pa.schema(
    [
        ("entry_id", pa.string()),
        ("committed_ns", pa.int64()),  # writer's clock at the commit; the order of entries
        ("asset", pa.string()),
        ("partition", pa.string()),
        ("kind", pa.string()),  # "rows" (Manifest) or "model" (ModelManifest)
        ("schema_version", pa.int32()),
        ("data_url", pa.string()),  # a model's folder for kind "model"
        ("rejections_url", pa.string()),
        ("rows_in", pa.int64()),
        ("rows_out", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("rejected_by_reason", pa.map_(pa.string(), pa.int64())),  # the writer's counts
        ("rule_stats", pa.list_(pa.struct([("rule", pa.string()), ("checked", pa.int64()), ("rejected", pa.int64()), ("passed", pa.int64())]))),
        ("source", pa.map_(pa.string(), pa.string())),  # shard fingerprint, models used, ...
        ("manifest", pa.string()),  # the manifest JSON itself, to rebuild the object exactly
    ]
)
ORDER_COLUMNS = ("committed_ns", "entry_id")
KEY_COLUMNS = ("asset", "partition")


class CatalogBusy(RuntimeError):
    """Files kept vanishing under a reader for READ_ATTEMPTS rounds (compactions racing)."""


# --- layout ---------------------------------------------------------------------------
def built_marker(storage: Storage) -> str:
    return storage.path(CATALOG_DIR, "built.json")


def log_dir(storage: Storage) -> str:
    return storage.path(CATALOG_DIR, "log")


def compacted_dir(storage: Storage) -> str:
    return storage.path(CATALOG_DIR, "compacted")


def _new_name(committed_ns: int | None = None) -> str:
    return f"{committed_ns or time.time_ns():020d}-{uuid.uuid4().hex}.parquet"


def _list(storage: Storage, folder: str) -> list[str]:
    """The entry files in ``folder``: one listing request per 1,000 files on S3."""
    try:
        paths = storage.fs.ls(folder, detail=False)
    except FileNotFoundError:  # nothing recorded yet
        return []
    return sorted(p for p in paths if _ENTRY_NAME.fullmatch(p.rstrip("/").rsplit("/", 1)[-1]))


# --- entries ----------------------------------------------------------------------------
def entry_row(manifest: Manifest | ModelManifest, committed_ns: int, entry_id: str) -> dict:
    raw = manifest.model_dump()
    row = {
        "entry_id": entry_id,
        "committed_ns": committed_ns,
        "asset": manifest.asset,
        "partition": manifest.partition,
        "manifest": json.dumps(raw, ensure_ascii=False, sort_keys=True),
        "rejected_by_reason": [],
        "rule_stats": [],
        "source": [],
    }
    if isinstance(manifest, ModelManifest):
        return {**row, "kind": "model", "data_url": manifest.model_url}
    return {
        **row,
        "kind": "rows",
        "schema_version": manifest.schema_version,
        "data_url": manifest.data_url,
        "rejections_url": manifest.rejections_url,
        "rows_in": manifest.rows_in,
        "rows_out": manifest.rows_out,
        "rows_rejected": manifest.rows_rejected,
        "rejected_by_reason": list(manifest.rejected_by_reason.items()),
        "rule_stats": [{"rule": s.get("rule"), **{k: _int_or_none(s.get(k)) for k in ("checked", "rejected", "passed")}} for s in manifest.rule_stats],
        "source": list(manifest.source.items()),
    }


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def manifest_of(raw_json: str) -> Manifest | ModelManifest:
    raw = json.loads(raw_json)
    return ModelManifest.model_validate(raw) if "model_url" in raw else Manifest.model_validate(raw)


def _write_entries(storage: Storage, dest: str, table: pa.Table) -> None:
    with storage.atomic_local_file(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def append(storage: Storage, manifests: Sequence[Manifest | ModelManifest], compact_at: int | None = None) -> str:
    """Record ``manifests`` as one new log entry file (a step over many files records them
    all at once: one file and one listing, not one each); fold the log when it has grown
    to ``compact_at`` entry files (default COMPACT_AT; 0: never here). Returns the path."""
    compact_at = COMPACT_AT if compact_at is None else compact_at
    committed_ns = time.time_ns()
    entry_id = uuid.uuid4().hex
    dest = f"{log_dir(storage)}/{committed_ns:020d}-{entry_id}.parquet"
    # Each row its own time (one ns apart, in the given order), so a partition listed twice has a latest.
    rows = [entry_row(manifest, committed_ns + i, f"{entry_id}-{i}") for i, manifest in enumerate(manifests)]
    _write_entries(storage, dest, pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA))
    if compact_at and len(_list(storage, log_dir(storage))) >= compact_at:
        try:
            compact(storage)
        except (OSError, duckdb.Error, CatalogBusy) as exc:
            # The entries are recorded; a failed fold only leaves the log longer for the next one.
            log.warning(f"catalog compaction after {dest} failed: {exc}")
    return dest


# --- reading ----------------------------------------------------------------------------
def _read_log(storage: Storage, paths: list[str]) -> pa.Table:
    """The log entries at ``paths``, one GET each (fetched concurrently on S3)."""
    if not paths:
        return ENTRY_SCHEMA.empty_table()
    blobs = storage.read_many(paths)
    for blob in blobs:
        if isinstance(blob, Exception):
            raise blob  # FileNotFoundError: folded meanwhile
    tables = [pq.read_table(pa.BufferReader(blob)) for blob in blobs]
    return pa.concat_tables(tables, promote_options="default")


def _connect(storage: Storage, database: str | None = None) -> duckdb.DuckDBPyConnection:
    from asagi_dagster.query import connect  # query imports this module for its views

    return connect(storage, database)


# Columns computed from an entry's own: a model's manifest JSON, without every row
# account's JSON along (the report lists models, and sums everything else).
DERIVED = {"model_manifest": "CASE WHEN kind = 'model' THEN manifest END", "manifest_md5": "md5(manifest)"}


def _latest_sql(columns: Iterable[str], sources: list[str], assets: Iterable[str] | None) -> str:
    wanted = list(dict.fromkeys([*KEY_COLUMNS, *columns]))
    selected = ", ".join(f"{DERIVED[c]} AS {c}" if c in DERIVED else c for c in dict.fromkeys([*wanted, *ORDER_COLUMNS]))
    union = " UNION ALL BY NAME ".join(f"SELECT {selected} FROM {s}" for s in sources)
    assets = None if assets is None else list(assets)
    where = ""
    if assets is not None:
        where = f"WHERE asset IN ({', '.join(_quote(a) for a in assets)})" if assets else "WHERE false"
    return (
        f"SELECT {', '.join(wanted)} FROM ({union}) {where} "
        "QUALIFY row_number() OVER (PARTITION BY asset, partition ORDER BY committed_ns DESC, entry_id DESC) = 1"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parquet_source(storage: Storage, paths: list[str]) -> str:
    return "read_parquet([" + ", ".join(_quote(storage.url(p)) for p in paths) + "], union_by_name=true)"


def load_latest(
    storage: Storage,
    con: duckdb.DuckDBPyConnection,
    table: str = "catalog",
    columns: Iterable[str] = ENTRY_SCHEMA.names,
    assets: Iterable[str] | None = None,
) -> None:
    """Create the temporary table ``table``: the latest entry of every (asset, partition),
    of ``assets`` only when given, with ``columns`` (and the key). ``con`` must reach the
    storage root (``query.connect``)."""
    ensure_built(storage)
    _load_latest(storage, con, table, list(columns), None if assets is None else list(assets))


def _load_latest(storage: Storage, con: duckdb.DuckDBPyConnection, table: str, columns: list[str], assets: list[str] | None) -> None:
    for _ in range(READ_ATTEMPTS):
        log_paths = _list(storage, log_dir(storage))  # before the compacted files: see the module doc
        compacted = _list(storage, compacted_dir(storage))
        try:
            con.register("_catalog_log", _read_log(storage, log_paths))
            sources = ["_catalog_log"] + ([_parquet_source(storage, compacted)] if compacted else [])
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {_latest_sql(columns, sources, assets)}")
            return
        except (FileNotFoundError, duckdb.Error) as exc:  # through fsspec, a vanished file is a plain duckdb.Error
            if _all_exist(storage, log_paths + compacted):
                raise  # not a file folded away under us
            log.info(f"catalog file folded while reading ({exc}); reading again")
        finally:
            con.unregister("_catalog_log")
    raise CatalogBusy(f"catalog files kept vanishing while read, {READ_ATTEMPTS} times")


def ensure_built(storage: Storage) -> None:
    """Build the catalog from the manifest files once, on a root that has never had one
    built (written before the catalog existed, or new: then it is one empty listing).
    Writers do not check, so the first commit after an upgrade does not hide the older
    manifests: the next read still finds no marker and rebuilds."""
    if not storage.exists(built_marker(storage)):
        log.info(f"no manifest catalog built under {storage.url(storage.root_path)} yet: building it from the manifest files")
        rebuild(storage)


def _all_exist(storage: Storage, paths: list[str]) -> bool:
    return all(storage.fs.exists(p) for p in paths)


def read_latest(storage: Storage, columns: Iterable[str] = ENTRY_SCHEMA.names, assets: Iterable[str] | None = None) -> pa.Table:
    """The latest entry of every (asset, partition), as an Arrow table sorted by key."""
    with _connect(storage) as con:
        load_latest(storage, con, "catalog", columns, assets)
        return con.execute("SELECT * FROM catalog ORDER BY asset, partition").to_arrow_table()


def latest_manifests(storage: Storage, assets: Iterable[str] | None = None) -> dict[tuple[str, str], Manifest | ModelManifest]:
    """(asset, partition) -> its manifest as last committed, from one catalog read."""
    table = read_latest(storage, ["manifest"], assets)
    return {(a, p): manifest_of(m) for a, p, m in zip(*(table.column(c).to_pylist() for c in ("asset", "partition", "manifest")))}


# --- compaction -------------------------------------------------------------------------
@dataclass
class Compaction:
    log_entries: int = 0  # log files folded
    compacted_files: int = 0  # compacted files merged
    entries: int = 0  # rows in the new compacted file
    output: str | None = None
    yielded: bool = False  # a file vanished while read: another compaction has it


def compact(storage: Storage, merge_at: int = MERGE_AT, merge_all: bool = False) -> Compaction:
    """Fold the log into one compacted file, and the compacted files too when there would be
    more than ``merge_at`` (or ``merge_all``); superseded entries are dropped. The output is
    committed before any input is removed, and only inputs read in full are removed."""
    log_paths = _list(storage, log_dir(storage))
    compacted = _list(storage, compacted_dir(storage))
    merged = compacted if merge_all or len(compacted) + bool(log_paths) > merge_at else []
    if not log_paths and len(merged) <= 1:
        return Compaction()
    dest = f"{compacted_dir(storage)}/{_new_name()}"
    try:
        with _connect(storage) as con:
            con.register("_catalog_log", _read_log(storage, log_paths))
            sources = ["_catalog_log"] + ([_parquet_source(storage, merged)] if merged else [])
            with storage.atomic_local_file(dest) as tmp:
                query = f"{_latest_sql(ENTRY_SCHEMA.names, sources, None)} ORDER BY asset, partition"
                con.execute(f"COPY ({query}) TO {_quote(tmp)} (FORMAT parquet, COMPRESSION zstd)")
                entries = pq.ParquetFile(tmp).metadata.num_rows
    except (FileNotFoundError, duckdb.Error):
        if _all_exist(storage, log_paths + merged):
            raise
        return Compaction(yielded=True)  # nothing removed; the other compaction folds it
    _remove(storage, log_paths + merged)
    return Compaction(len(log_paths), len(merged), entries, storage.url(dest))


def _remove(storage: Storage, paths: list[str]) -> None:
    """Remove ``paths``; one already gone was removed by a concurrent compaction."""
    if not paths:
        return
    if storage.is_local:
        for path in paths:
            discard(path)
    else:
        storage.fs.rm(paths)  # bulk deletes, 1,000 keys a request; absent keys are no error


# --- checking and rebuilding from the manifest files ------------------------------------------
def manifest_paths(storage: Storage) -> list[str]:
    """Every committed manifest file under the root: a listing of the whole root, O(N)."""
    found = storage.fs.glob(storage.path("*", "*", MANIFEST_FILE))
    return sorted(p for p in found if not p.startswith(storage.path(CATALOG_DIR) + "/"))


def _read_manifest_files(storage: Storage, paths: list[str], batch: int = 1000):
    """(path, manifest JSON text) of each path, fetched ``batch`` at a time."""
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        for path, blob in zip(chunk, storage.read_many(chunk)):
            if isinstance(blob, FileNotFoundError):  # removed since the listing: not there
                continue
            if isinstance(blob, Exception):
                raise blob
            yield path, blob.decode("utf-8")


@dataclass
class CatalogCheck:
    manifests: int = 0  # manifest files read
    entries: int = 0  # latest catalog entries
    missing: list[str] = field(default_factory=list)  # a manifest file the catalog lacks
    stale: list[str] = field(default_factory=list)  # the catalog holds another version of it
    orphaned: list[str] = field(default_factory=list)  # a catalog entry with no manifest file

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.orphaned)


def check(storage: Storage) -> CatalogCheck:
    """Compare the catalog's latest entries with the manifest files: reads every manifest,
    O(N) requests. A commit under way at the time shows up too: check again before a
    rebuild."""
    table = read_latest(storage, ["manifest"])
    # Compared as manifests, not as JSON text: a file written before a field had a default
    # would otherwise differ from its own entry for good, rebuild or not.
    cataloged = {(a, p): manifest_of(m) for a, p, m in zip(*(table.column(c).to_pylist() for c in ("asset", "partition", "manifest")))}
    result = CatalogCheck(entries=len(cataloged))
    seen = set()
    for path, text in _read_manifest_files(storage, manifest_paths(storage)):
        result.manifests += 1
        asset, partition = path.split("/")[-3:-1]
        seen.add((asset, partition))
        entry = cataloged.get((asset, partition))
        if entry is None:
            result.missing.append(f"{asset}/{partition}")
        elif entry != manifest_of(text):
            result.stale.append(f"{asset}/{partition}")
    result.orphaned = [f"{a}/{p}" for a, p in sorted(set(cataloged) - seen)]
    return result


def rebuild(storage: Storage) -> int:
    """Rewrite the catalog from the manifest files (O(N)); returns the entries written.

    A manifest the catalog already holds as its latest entry keeps that entry's time (a
    partition's version: the hash index compares it). Any other takes the rebuild's start,
    so it supersedes every entry written before (stale ones included) and loses to every
    commit recorded after. The old catalog files, listed before the manifests are read,
    are removed once the new one is committed."""
    started = time.time_ns()
    old = _list(storage, log_dir(storage)) + _list(storage, compacted_dir(storage))
    versions = _versions(storage)
    dest = f"{compacted_dir(storage)}/{_new_name(started)}"
    written, tmp = 0, storage.temp_for(dest)
    try:
        with pq.ParquetWriter(tmp, ENTRY_SCHEMA, compression="zstd") as writer:
            rows = []
            for _, text in _read_manifest_files(storage, manifest_paths(storage)):
                manifest = manifest_of(text)
                row = entry_row(manifest, started, uuid.uuid4().hex)
                digest, committed_ns = versions.get((manifest.asset, manifest.partition), (None, None))
                if digest == hashlib.md5(row["manifest"].encode("utf-8")).hexdigest():
                    row["committed_ns"] = committed_ns
                rows.append(row)
                if len(rows) == 10_000:
                    writer.write_table(pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA))
                    written, rows = written + len(rows), []
            writer.write_table(pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA))
            written += len(rows)
        if written:  # an empty root needs no file, only the marker
            storage.commit(tmp, dest)
    finally:
        discard(tmp)
    _remove(storage, old)
    mark_built(storage, written)
    return written


def _versions(storage: Storage) -> dict[tuple[str, str], tuple[str, int]]:
    """(asset, partition) -> (md5 of the manifest JSON, committed_ns) of the catalog's latest
    entries; empty when there is no catalog or it cannot be read (then every entry is new)."""
    try:
        with _connect(storage) as con:
            _load_latest(storage, con, "catalog", ["manifest_md5", "committed_ns"], None)
            rows = con.execute("SELECT asset, partition, manifest_md5, committed_ns FROM catalog").fetchall()
    except (OSError, duckdb.Error, CatalogBusy) as exc:
        log.warning(f"the catalog could not be read, every rebuilt entry is new: {exc}")
        return {}
    return {(asset, partition): (digest, committed_ns) for asset, partition, digest, committed_ns in rows}


def mark_built(storage: Storage, entries: int) -> None:
    """Say that this root's catalog holds every manifest (see ``ensure_built``)."""
    storage.write_json(built_marker(storage), {"rebuilt_ns": time.time_ns(), "entries": entries})
