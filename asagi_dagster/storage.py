"""The data plane: Parquet per asset and partition under one fsspec root.

Layout (unpartitioned assets use the partition name ``all``):
    <root>/<asset>/<partition>/data.parquet              accepted rows
    <root>/<asset>/<partition>/_manifest.json            the small manifest passed between assets
    <root>/rejections/<asset>/<partition>/data.parquet   record_id, reason, detail
    <root>/_catalog/                                     every manifest, for steps that read them all (catalog.py)
    <root>/_cache/downloads/                             download outcomes (web/pair_images.py)
    <root>/_work/<asset>/<partition>/                    resumable work: synthesis chunks, training checkpoints

Every file is committed atomically (a temporary name then a rename locally, a single
upload on s3), so readers never see a partial file and a re-run replaces, never
duplicates. A process killed mid-commit (SIGKILL, the OOM killer) leaves its temporary
files behind; the next run of that asset partition removes them (``remove_stale_temps``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from asagi_dagster.settings import LocalPath, Strict

log = logging.getLogger(__name__)

UNPARTITIONED = "all"
DATA_FILE = "data.parquet"
MANIFEST_FILE = "_manifest.json"

REJECTION_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


class S3Settings(Strict):
    """Where s3:// roots live. Credentials come from AWS_* environment variables."""

    endpoint_url: str | None = None
    region: str | None = None


class StorageSettings(Strict):
    root: LocalPath = Field(description="fsspec URL (file:// or s3://) or a local path.")
    s3: S3Settings = S3Settings()
    duckdb_path: LocalPath | None = Field(
        default=None,
        description="Database file for stats and reports; None means in-memory.",
    )


# The names temp_for gives on a local root: ".<name>.tmp-<uuid4 hex>" beside the file.
_LOCAL_TEMP = re.compile(r"\..+\.tmp-[0-9a-f]{32}")


def fsspec_options(url: str, s3: S3Settings) -> dict:
    """The fsspec options for a URL: the s3 endpoint and region, nothing for local paths."""
    options: dict = {}
    if url.startswith(("s3://", "s3a://")):
        options = {"client_kwargs": {}, "use_listings_cache": False}  # re-runs must see fresh listings
        if s3.endpoint_url:
            options["endpoint_url"] = s3.endpoint_url
        if s3.region:
            options["client_kwargs"]["region_name"] = s3.region
    return options


def filesystem_for(url: str, s3: S3Settings) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path for a local path, file:// or s3:// URL."""
    return fsspec.core.url_to_fs(url, **fsspec_options(url, s3))


def url_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URL of a path on ``fs``: local paths stay plain, remote ones get their protocol."""
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return path
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path}"


class Manifest(BaseModel):
    """What one asset partition holds; small enough to pass through the IO manager."""

    asset: str
    partition: str
    schema_version: int
    data_url: str
    rejections_url: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    rejected_by_reason: dict[str, int]
    source: dict[str, str] = {}
    # Stages that apply named rules in order: per rule, rows that reached it ("checked"),
    # it rejected and it passed.
    rule_stats: list[dict[str, str | int]] = []


class ModelManifest(BaseModel):
    """What a training stage produced: a Hugging Face model folder and how it was made."""

    asset: str
    partition: str = UNPARTITIONED
    model_url: str
    stage: str
    steps: int
    examples: int  # in the mixture it trained on
    mixture_url: str
    final_loss: float | None = None
    resumed_from: int | None = None


class Storage:
    """One storage root (file:// or s3://) and the layout rules above."""

    def __init__(self, settings: StorageSettings):
        self.settings = settings
        self.options = fsspec_options(settings.root, settings.s3)
        self.fs, root_path = filesystem_for(settings.root, settings.s3)
        self.root_path = root_path.rstrip("/")
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)

    # --- paths -----------------------------------------------------------------
    def url(self, path: str) -> str:
        return url_of(self.fs, path)

    def asset_dir(self, asset: str, partition: str | None) -> str:
        return f"{self.root_path}/{asset}/{partition or UNPARTITIONED}"

    def rejections_dir(self, asset: str, partition: str | None) -> str:
        return f"{self.root_path}/rejections/{asset}/{partition or UNPARTITIONED}"

    def manifest_path(self, asset: str, partition: str | None) -> str:
        return f"{self.asset_dir(asset, partition)}/{MANIFEST_FILE}"

    def path(self, *parts: str) -> str:
        return "/".join([self.root_path, *parts])

    def strip_protocol(self, url: str) -> str:
        return self.fs._strip_protocol(url)

    # --- atomic writes ---------------------------------------------------------
    def temp_for(self, dest: str) -> str:
        """A local path to write ``dest``'s content to before ``commit``."""
        if self.is_local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            return f"{os.path.dirname(dest)}/.{os.path.basename(dest)}.tmp-{uuid.uuid4().hex}"
        # Staged in the local temp folder, named after the destination folder so that the
        # next run of that partition can tell its leftovers from anyone else's.
        handle, tmp = tempfile.mkstemp(prefix=_staging_prefix(os.path.dirname(dest)), suffix=".part")
        os.close(handle)
        return tmp

    def remove_stale_temps(self, folder: str) -> list[str]:
        """Remove what commits into ``folder`` left when their process was killed: temporary
        files (beside the destination on a local root, in the local temp folder for s3) and,
        on s3, unfinished multipart uploads of files in ``folder``. Only that folder's, only
        names ``temp_for`` gives. Called as a partition's run starts: one run per partition
        at a time (the re-sync skips busy partitions); a second one running at once would
        see its commit fail, not a partial file."""
        if self.is_local:
            names = _listdir(folder)
            stale = [f"{folder}/{n}" for n in names if _LOCAL_TEMP.fullmatch(n)]
        else:
            staging = tempfile.gettempdir()
            ours = re.compile(re.escape(_staging_prefix(folder)) + r"[a-z0-9_]+\.part")
            stale = [os.path.join(staging, n) for n in _listdir(staging) if ours.fullmatch(n)]
        removed = [path for path in stale if _unlink(path)]
        if not self.is_local and self.fs.protocol[0] in ("s3", "s3a"):
            removed += self._abort_unfinished_uploads(folder)
        return removed

    def _abort_unfinished_uploads(self, folder: str) -> list[str]:
        """Abort the multipart uploads (files of 100 MB and more) a killed commit left
        unfinished in ``folder``: invisible, but their parts are stored and billed."""
        bucket, prefix, _ = self.fs.split_path(folder.rstrip("/") + "/")
        aborted: list[str] = []
        marker: dict[str, str] = {}
        try:
            while True:
                page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
                for upload in page.get("Uploads", []):
                    if "/" not in upload["Key"][len(prefix) :]:  # this folder's files, not its subfolders'
                        self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted.append(f"{bucket}/{upload['Key']} (upload {upload['UploadId']})")
                if not page.get("IsTruncated"):
                    return aborted
                marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
        except OSError as exc:  # s3fs raises PermissionError when the policy allows no listing of uploads
            log.warning(f"unfinished uploads in s3://{bucket}/{prefix} not checked: {exc}")
            return aborted

    def commit(self, tmp: str, dest: str) -> None:
        """Make ``tmp`` visible as ``dest`` in one step: a rename, or one upload."""
        try:
            if self.is_local:
                os.replace(tmp, dest)
            else:
                self.fs.put_file(tmp, dest)
        finally:
            discard(tmp)

    @contextmanager
    def atomic_local_file(self, dest: str) -> Iterator[str]:
        """Yield a local path to write; on success it becomes ``dest``, else nothing does."""
        tmp = self.temp_for(dest)
        try:
            yield tmp
        except BaseException:
            discard(tmp)
            raise
        self.commit(tmp, dest)

    def write_bytes(self, dest: str, data: bytes) -> None:
        with self.atomic_local_file(dest) as tmp:
            Path(tmp).write_bytes(data)

    def write_json(self, dest: str, obj: object) -> None:
        self.write_bytes(dest, json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8"))

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read())

    def read_many(self, paths: list[str]) -> list[bytes | Exception]:
        """Each file's bytes, or the error reading it, in order: one GET a file, fetched
        concurrently on S3. A ranged read ("bytes=0-"), because s3fs asks for the size
        first (a HEAD) when a whole file is wanted."""
        return self.fs.cat_ranges(paths, 0, None, on_error="return")

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def identity(self, url: str) -> dict:
        """What tells one version of a file from another: its size and change time."""
        info = self.fs.info(self.strip_protocol(url))
        return {"url": url, "size": info.get("size"), "changed": str(info.get("mtime") or info.get("LastModified") or info.get("ETag"))}

    def local_folder(self, url: str) -> str:
        """A local folder holding the folder at ``url`` (a model): itself when local, else a
        fresh download into a temporary folder."""
        path = self.strip_protocol(url)
        if self.is_local:
            return path
        folder = tempfile.mkdtemp(prefix="asagi-folder-")
        self.fs.get(path.rstrip("/") + "/", folder + "/", recursive=True)
        return folder

    # --- manifests ---------------------------------------------------------------
    def write_manifest(self, manifest: Manifest | ModelManifest, record: bool = True) -> None:
        """Commit the manifest file (the IO manager's source of truth), then record it in
        the catalog that global steps read (asagi_dagster/catalog.py). A failure between
        the two leaves the catalog behind, which ``asagi catalog check`` finds.
        ``record=False``: the caller records it later with others (``catalog.append``)."""
        from asagi_dagster import catalog  # it builds on this module

        self.write_json(self.manifest_path(manifest.asset, manifest.partition), manifest.model_dump())
        if record:
            catalog.append(self, [manifest])

    def read_manifest(self, asset: str, partition: str | None) -> Manifest | ModelManifest:
        raw = self.read_json(self.manifest_path(asset, partition))
        return ModelManifest.model_validate(raw) if "model_url" in raw else Manifest.model_validate(raw)

    # --- Parquet -----------------------------------------------------------------
    def columns(self, url: str) -> list[str]:
        """Column names of a Parquet file, from its footer only."""
        with self.fs.open(self.strip_protocol(url), "rb") as f:
            return pq.ParquetFile(f).schema_arrow.names

    def iter_batches(self, path: str, columns: list[str] | None = None, batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
        """Stream a Parquet file batch by batch; never the whole file in memory."""
        with self.fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)

    def iter_rows(self, path: str, columns: list[str] | None = None, batch_rows: int = 256) -> Iterator[dict]:
        for batch in self.iter_batches(path, columns, batch_rows):
            yield from batch.to_pylist()


class TableSink:
    """Buffers rows and writes them as Parquet row groups into a file committed atomically.

    Flushes every ``batch_rows`` rows or ``batch_bytes`` of buffered payload, so memory
    stays flat however big the shard is. A row group is encoded, compressed and written
    on a writer thread while the caller builds the next one (pyarrow releases the GIL
    there), with one row group in flight at a time: order and the memory bound hold, and
    a write's error is raised by the next flush or by close.
    """

    def __init__(self, local_path: str, schema: pa.Schema, batch_rows: int = 1024, batch_bytes: int = 8 << 20):
        self.schema = schema
        # Payload columns (html, image bytes) are unique per row, and JPEG/PNG bytes do not
        # compress: dictionary encoding, min/max statistics and (for binary) zstd would
        # only cost time there.
        payload = {f.name for f in schema if f.type in (pa.large_binary(), pa.binary(), pa.large_string())}
        binary = {f.name for f in schema if f.type in (pa.large_binary(), pa.binary())}
        small = [name for name in schema.names if name not in payload]
        self._writer = pq.ParquetWriter(
            local_path,
            schema,
            compression={name: ("none" if name in binary else "zstd") for name in schema.names},
            use_dictionary=small,
            write_statistics=small,
        )
        self._rows: list[dict] = []
        self._bytes = 0
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.count = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._in_flight: Future | None = None

    def write(self, row: dict, size_hint: int = 0) -> None:
        self._rows.append(row)
        self._bytes += size_hint
        self.count += 1
        if len(self._rows) >= self.batch_rows or self._bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=self.schema)
            self._rows, self._bytes = [], 0
            self._wait()
            self._in_flight = self._thread.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        """Wait for the row group in flight; raises its write error, if any."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
        finally:
            self._thread.shutdown()
            self._writer.close()

    def abort(self) -> None:
        """Close without writing what is buffered: the file is about to be discarded."""
        self._rows = []
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the file is discarded; the caller's error is the one that matters
            pass
        finally:
            self._thread.shutdown()
            self._writer.close()


class StageWriter:
    """Accepted rows and rejections of one asset partition, with their accounting.

    Use as a context manager. On a clean exit the data file, then the rejections file,
    are each committed atomically, and ``manifest`` is set; the IO manager writes the
    manifest last, so it never names rows that are not there yet. If the body raises,
    nothing is committed and the previous output stays as it was.
    """

    def __init__(self, storage: Storage, asset: str, partition: str | None, schema: pa.Schema, schema_version: int):
        self.storage = storage
        self.asset = asset
        self.partition = partition or UNPARTITIONED
        self.schema = schema
        self.schema_version = schema_version
        self.rows_in = 0
        self.reasons: Counter[str] = Counter()
        self._manifest: Manifest | None = None
        self.source: dict[str, str] = {}
        self.rule_stats: list[dict] = []

    @property
    def manifest(self) -> Manifest:
        """What the writer committed; there is none until it closed without an error."""
        if self._manifest is None:
            raise RuntimeError(f"{self.asset} {self.partition}: no manifest, the writer has not closed without an error")
        return self._manifest

    def __enter__(self) -> StageWriter:
        for folder in (self.storage.asset_dir(self.asset, self.partition), self.storage.rejections_dir(self.asset, self.partition)):
            for path in self.storage.remove_stale_temps(folder):
                log.info(f"removed {path}, left by a killed run of {self.asset} {self.partition}")
        self._data_dest = f"{self.storage.asset_dir(self.asset, self.partition)}/{DATA_FILE}"
        self._rej_dest = f"{self.storage.rejections_dir(self.asset, self.partition)}/{DATA_FILE}"
        self._data_tmp = self.storage.temp_for(self._data_dest)
        self._rej_tmp = self.storage.temp_for(self._rej_dest)
        self.data = TableSink(self._data_tmp, self.schema)
        self.rejections = TableSink(self._rej_tmp, REJECTION_SCHEMA)
        return self

    def count_in(self, n: int = 1) -> None:
        self.rows_in += n

    def write(self, row: dict, size_hint: int = 0) -> None:
        self.data.write(row, size_hint)

    def reject(self, record_id: str, reason: str, detail: str | None = None) -> None:
        self.reasons[reason] += 1
        self.rejections.write({"record_id": record_id, "reason": reason, "detail": _clip(detail)})

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        try:
            if exc_type is not None:
                self.data.abort()
                self.rejections.abort()
            else:
                try:
                    self.data.close()
                finally:
                    self.rejections.close()
                self.storage.commit(self._data_tmp, self._data_dest)
                self.storage.commit(self._rej_tmp, self._rej_dest)
        finally:
            discard(self._data_tmp)
            discard(self._rej_tmp)
        if exc_type is None:
            self._manifest = Manifest(
                asset=self.asset,
                partition=self.partition,
                schema_version=self.schema_version,
                data_url=self.storage.url(self._data_dest),
                rejections_url=self.storage.url(self._rej_dest),
                rows_in=self.rows_in,
                rows_out=self.data.count,
                rows_rejected=self.rejections.count,
                rejected_by_reason=dict(sorted(self.reasons.items())),
                source=self.source,
                rule_stats=self.rule_stats,
            )
        return False


def discard(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _staging_prefix(folder: str) -> str:
    return f"asagi-{hashlib.sha256(folder.rstrip('/').encode()).hexdigest()[:16]}-"


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):  # a partition's first run: nothing left to remove
        return []


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:  # removed meanwhile
        return False


def _clip(text: str | None, limit: int = 500) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "…"
