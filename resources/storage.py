"""Storage, DuckDB and profile resources, and the IO manager that passes manifests."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

import dagster as dg
import duckdb

from asagi_dagster.config import AsagiConfig, load_config
from asagi_dagster.query import connect
from asagi_dagster.storage import Manifest, ModelManifest, S3Settings, Storage, StorageSettings
from asagi_dagster.web.batches import files_of


class ProfileResource(dg.ConfigurableResource):
    """The YAML profile every stage reads its settings from."""

    path: str

    @cached_property
    def settings(self) -> AsagiConfig:
        return load_config(self.path)


class StorageResource(dg.ConfigurableResource):
    """The storage root (file:// or s3://); s3 credentials come from AWS_* variables."""

    root: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings)

    @property
    def settings(self) -> StorageSettings:
        return StorageSettings(root=self.root, s3=S3Settings(endpoint_url=self.s3_endpoint_url, region=self.s3_region))


class DuckDBResource(dg.ConfigurableResource):
    """DuckDB over the storage root's Parquet files, for the asset checks.

    In memory, so checks of parallel runs never contend for a database file; the
    profile's file (``storage.duckdb_path``) is the report's, written by ``asagi report``.
    """

    storage: StorageResource

    def connect(self) -> duckdb.DuckDBPyConnection:
        return connect(self.storage.storage)


# Input metadata: load the input as {file: Manifest} for every file of the run's partitions
# (a run over a range of batches of shard files; see assets/shards.py).
BY_SHARD = "asagi/by_shard"


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores and loads the small manifests assets pass on; the data stays in Parquet.

    A step over a run's shards outputs ``{partition: Manifest}``, each manifest already
    committed by the step as its shard finished (assets/shards.py); an input marked
    ``BY_SHARD`` is loaded that way, one manifest per partition."""

    storage: StorageResource

    def handle_output(self, context: dg.OutputContext, obj: Manifest | ModelManifest | dict) -> None:
        asset = context.asset_key.to_user_string()
        if not isinstance(obj, dict):
            if not isinstance(obj, (Manifest, ModelManifest)):
                raise TypeError(f"{asset} must return a Manifest, got {type(obj).__name__}")
            self.storage.storage.write_manifest(obj)
            return
        files = self._files(context.asset_partition_keys)
        if set(obj) != files:
            raise ValueError(f"{asset} returned manifests of {sorted(obj)[:5]}, not of the run's files {sorted(files)[:5]}")
        if not all(isinstance(manifest, Manifest) and manifest.partition == partition for partition, manifest in obj.items()):
            raise TypeError(f"{asset} must return {{partition: its Manifest}}")

    def load_input(self, context: dg.InputContext) -> Manifest | ModelManifest | dict[str, Manifest | ModelManifest]:
        if (context.definition_metadata or {}).get(BY_SHARD):
            return {shard: self._load(context, shard) for shard in sorted(self._files(context.asset_partition_keys))}
        return self._load(context, context.asset_partition_key if context.has_asset_partitions else None)

    def _files(self, partitions: Iterable[str]) -> set[str]:
        """The files of partitions that are batches of inbox files (D111); any other partition is itself."""
        return {shard for files in files_of(self.storage.storage, partitions).values() for shard in files}

    def _load(self, context: dg.InputContext, partition: str | None) -> Manifest | ModelManifest:
        asset = context.asset_key.path[-1]
        storage = self.storage.storage
        if not storage.exists(storage.manifest_path(asset, partition)):
            raise FileNotFoundError(f"{asset} has no materialization for partition {partition or 'all'}; materialize it first")
        return storage.read_manifest(asset, partition)
