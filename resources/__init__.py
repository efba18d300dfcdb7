"""Dagster resources, built in one place from the active profile (ASAGI_CONFIG)."""

from asagi_dagster.config import AsagiConfig
from resources.gpu_jobs import GpuJobsResource
from resources.storage import DuckDBResource, ManifestIOManager, ProfileResource, StorageResource


def build_resources(config_path: str, config: AsagiConfig) -> dict:
    storage = StorageResource(
        root=config.storage.root,
        s3_endpoint_url=config.storage.s3.endpoint_url,
        s3_region=config.storage.s3.region,
    )
    return {
        "profile": ProfileResource(path=config_path),
        "storage": storage,
        "duckdb": DuckDBResource(storage=storage),
        "io_manager": ManifestIOManager(storage=storage),
        "gpu_jobs": GpuJobsResource(settings_json=config.gpu_jobs.model_dump_json()),
    }


__all__ = ["build_resources", "DuckDBResource", "ManifestIOManager", "ProfileResource", "StorageResource"]
