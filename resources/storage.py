"""Storage, DuckDB and profile resources, and the IO manager that passes manifests."""

from __future__ import annotations

from functools import cached_property

import dagster as dg
import duckdb

from asagi_dagster.config import AsagiConfig, S3Settings, StorageSettings, load_config
from asagi_dagster.query import connect
from asagi_dagster.storage import Manifest, ModelManifest, Storage


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


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores and loads the small manifests assets pass on; the data stays in Parquet."""

    storage: StorageResource

    def handle_output(self, context: dg.OutputContext, obj: Manifest | ModelManifest) -> None:
        if not isinstance(obj, (Manifest, ModelManifest)):
            raise TypeError(f"{context.asset_key.to_user_string()} must return a Manifest, got {type(obj).__name__}")
        self.storage.storage.write_manifest(obj)

    def load_input(self, context: dg.InputContext) -> Manifest | ModelManifest:
        asset = context.asset_key.path[-1]
        partition = context.asset_partition_key if context.has_asset_partitions else None
        storage = self.storage.storage
        if not storage.exists(storage.manifest_path(asset, partition)):
            raise FileNotFoundError(f"{asset} has no materialization for partition {partition or 'all'}; materialize it first")
        return storage.read_manifest(asset, partition)
