"""Whether a CLI run would redo work already done: a job's partition is skipped when its
last successful run started from the same inputs (a run tag holds their fingerprint).

The fingerprint covers what decides a run's outcome:
- the code (every source file of the packages) and the profile;
- the latest materialization of each asset the job reads but does not make: of the
  same partition when the two share partitions (a shard's screened pairs for its
  filtered split), else of any partition (every shard's filtered pairs for a mixture),
  so new or re-made input anywhere upstream runs the job again;
- the files outside Dagster that a job's first steps read: a shard's WARC, a dataset's
  or benchmark's folder, the filters' benchmark and document-reference images.
A job also runs when one of its outputs' manifests is gone from the storage root.

Its cost: one materialization lookup per upstream asset, one manifest stat per output,
one listing per external folder; nothing grows with the number of shards except the
external folders' listings, which the steps read whole anyway.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

import dagster as dg
import fsspec.core

from asagi_dagster.config import AsagiConfig
from asagi_dagster.core import fingerprint
from asagi_dagster.storage import Storage, fsspec_options
from asagi_dagster.web.batches import files_of

INPUTS_TAG = "asagi/inputs"
CODE_PACKAGES = ("asagi_dagster", "assets", "resources")


@cache
def code_fingerprint() -> str:
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations is not None  # our own packages, installed
        for folder in spec.submodule_search_locations:
            for path in sorted(Path(folder).rglob("*.py")):
                digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def inputs_fingerprint(config: AsagiConfig, instance: dg.DagsterInstance, job: dg.JobDefinition, asset_graph, partition) -> str:
    made = set(job.asset_layer.selected_asset_keys)
    partitions_def = job.partitions_def
    upstream = {}
    for parent in sorted({p for key in made for p in asset_graph.get(key).parent_keys} - made):
        same_partitions = partition is not None and asset_graph.get(parent).partitions_def == partitions_def
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, asset_partitions=[str(partition)]) if same_partitions else parent, limit=1
        ).records
        upstream[parent.to_user_string()] = records[0].storage_id if records else None
    return fingerprint(
        {
            "code": code_fingerprint(),
            "profile": config.model_dump(mode="json"),
            "job": job.name,
            "partition": None if partition is None else str(partition),
            "upstream": upstream,
            "outside": outside_inputs(config, job.name, partition),
        }
    )


def outside_inputs(config: AsagiConfig, job_name: str, partition) -> dict:
    """What the job reads from outside the storage root and Dagster's assets."""
    if job_name == "web_ingest":
        from asagi_dagster.web.inbox import Inbox

        return {"shard": Inbox(config.sources.web.inbox, config.storage.s3).fingerprint(str(partition))}
    if job_name == "dataset_ingest":
        source = config.sources.datasets[str(partition)]
        return {"path": listing(config, source.path), "images": listing(config, source.image_dir)}
    if job_name == "load_benchmarks":
        assert config.evaluation is not None  # the job is defined only with an evaluation section
        return {"path": listing(config, config.evaluation.benchmarks[str(partition)].path)}
    if job_name == "filter_indexes":
        filters = config.filters
        paths = [p for b in filters.decontamination.benchmarks.values() for p in (b.images, b.vg_image_ids)]
        return {path: listing(config, path) for path in [*paths, filters.document_filter.reference_images] if path}
    return {}


def listing(config: AsagiConfig, path: str | None) -> list | None:
    """Name, size and change time of every file under ``path`` (a file or a folder)."""
    if not path:
        return None
    fs, stripped = fsspec.core.url_to_fs(path, **fsspec_options(path, config.storage.s3))
    if not fs.exists(stripped):
        return None
    found = fs.find(stripped, detail=True) if fs.isdir(stripped) else {stripped: fs.info(stripped)}
    return [[name, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("ETag"))] for name, info in sorted(found.items())]


def outputs_present(storage: Storage, job: dg.JobDefinition, partition) -> bool:
    """Whether every output of the job's run is on the storage root: for a partition, the
    manifest of each of its files (a batch of inbox files, D111: each file is committed
    on its own)."""
    keys = [None] if partition is None else files_of(storage, [str(partition)])[str(partition)]
    assets = [asset.to_user_string() for asset in job.asset_layer.selected_asset_keys]
    return all(storage.exists(storage.manifest_path(asset, key)) for asset in assets for key in keys)


def unchanged_since(instance: dg.DagsterInstance, job_name: str, inputs: str) -> str | None:
    """The id of the job's last successful run from these inputs, if any."""
    runs = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS], tags={INPUTS_TAG: inputs}), limit=1)
    return runs[0].dagster_run.run_id if runs else None
