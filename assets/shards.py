"""Many shards per run, and many files per partition.

A backfill of the per-shard web steps runs them over ranges of up to
``sources.web.shards_per_run`` partitions (``shard_batches``), so a crawl of 90,000 shards is
90,000 / N runs, not 90,000 runs that each pay a run's fixed cost (process start, code
load, queue: 15-20 s measured here, docs/scale.md). A run of one partition (the CLI, the
UI's materialize of one partition) takes the same code path with a range of one. A
partition is a batch of up to ``sources.web.files_per_partition`` inbox files (D111,
asagi_dagster/web/batches.py; one file by default): the steps go file by file
(``each_shard``).

Per file, as before: its files and then its manifest are committed as soon as it is
done (``committed``), and downstream steps read its manifest; a retry of the run skips
the files it already committed. Per partition: a materialization with its metadata
(counts, samples, the accounting recount; for a batch, the sums of its files). Per run:
each check has one result (Dagster records a check result per step, not per
partition), passed only when every file passed, naming those that failed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator

import dagster as dg

from asagi_dagster import catalog
from asagi_dagster.config import AsagiConfig
from asagi_dagster.query import accounting
from asagi_dagster.storage import Manifest
from asagi_dagster.web.batches import files_of
from assets.metadata import manifest_metadata, rule_stats_metadata
from resources.storage import BY_SHARD, DuckDBResource, StorageResource

FAILED_SHARDS_SHOWN = 20  # in a check's metadata; every shard's result is on its own materialization
PARTS_SHOWN = 20  # files listed in a batch's materialization (all of them are in the catalog and the report)
PROGRESS_EVERY_S = 30  # between "file n/N" lines of a step over several files


def shard_batches(shards_per_run: int) -> dg.BackfillPolicy:
    """The backfill policy of every per-shard web step."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run)


def dataset_partitions(config: AsagiConfig) -> dg.StaticPartitionsDefinition:
    """One partition per open dataset the profile lists (the same definition wherever it is built)."""
    return dg.StaticPartitionsDefinition(sorted(config.sources.datasets))


def run_files(context: dg.AssetExecutionContext, storage: StorageResource) -> dict[str, list[str]]:
    """The run's partitions (batches of inbox files, D111) and the files of each, in order."""
    return files_of(storage.storage, context.partition_keys)


def each_shard(context: dg.AssetExecutionContext, storage: StorageResource) -> Iterator[str]:
    """The files of the run's partitions in order. Progress is logged at the first file
    and then at most every PROGRESS_EVERY_S (an event-log write costs 10-20 ms, about an
    empty file's work in a step); the file a step stopped in is logged as it stops. In a
    retry of the step (a step retry, or the run re-executed), a file whose outputs an
    earlier attempt committed is skipped: a batch of 1,000 files that failed on its 900th
    starts again there."""
    shards = [shard for files in run_files(context, storage).values() for shard in files]
    retry = context.retry_number > 0 or context.run.root_run_id is not None
    skipped = [shard for shard in shards if retry and _committed_by_this_run(context, storage, shard)]
    if skipped:
        shown = ", ".join(f"{shard} committed by an earlier attempt of this run, skipped" for shard in skipped[:PARTS_SHOWN])
        context.log.info(f"{len(skipped)} of {len(shards)} files done before: {shown}")
    done_before = set(skipped)
    logged_at = None
    for number, shard in enumerate(shards, 1):
        if shard in done_before:
            continue
        if len(shards) > 1 and (logged_at is None or time.monotonic() - logged_at >= PROGRESS_EVERY_S):
            context.log.info(f"file {number}/{len(shards)}: {shard}")
            logged_at = time.monotonic()
        try:
            yield shard
        except GeneratorExit:  # the step's loop left early: it raised while on this file
            context.log.error(f"stopped in file {number}/{len(shards)}: {shard}")
            raise


RUN_SOURCE = "root_run"  # in a per-file manifest's source: the run whose attempt committed it


def _root_run(context: dg.AssetExecutionContext) -> str:
    """The run's first attempt: the same for every retry and re-execution of it."""
    return context.run.root_run_id or context.run.run_id


def _committed_by_this_run(context: dg.AssetExecutionContext, storage: StorageResource, shard: str) -> bool:
    root, st = _root_run(context), storage.storage
    for key in context.selected_asset_keys:
        asset = key.to_user_string()
        if not st.exists(st.manifest_path(asset, shard)):
            return False
        manifest = st.read_manifest(asset, shard)
        if not isinstance(manifest, Manifest) or manifest.source.get(RUN_SOURCE) != root:
            return False
    return True


def committed(context: dg.AssetExecutionContext, storage: StorageResource, *manifests: Manifest) -> list[Manifest]:
    """Commit a finished file's manifests now, not when the run ends: the file's data
    files are already in place, and a later file of the run that fails must not leave
    this one with new data under its old manifest. Each is marked with the run, so a
    retry of the run skips the file (``each_shard``)."""
    marked = [m.model_copy(update={"source": {**m.source, RUN_SOURCE: _root_run(context)}}) for m in manifests]
    for manifest in marked:
        storage.storage.write_manifest(manifest, record=False)  # into the catalog with the step's others (shard_outputs)
    return marked


def by_shard(asset: str | None = None, partition_mapping: dg.PartitionMapping | None = None) -> dg.AssetIn:
    """An input loaded as ``{file: Manifest}`` for every file of the run's partitions (a
    partition that is not a batch of inbox files is its own one "file"), through the
    identity mappings used here."""
    return dg.AssetIn(asset, partition_mapping=partition_mapping, metadata={BY_SHARD: True})


def shard_outputs(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    duckdb: DuckDBResource,
    made: dict[str, list[Manifest]],
    extra: dict[str, dict] | None = None,
    record: bool = True,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The outputs and accounting checks of a run over ``made`` (per file, the manifests
    of the step's assets; ``extra``: more metadata per file). Each partition's
    materialization carries its file's metadata, or for a batch of several files their
    sums (``batch_metadata``).

    ``record``: the manifests go into the catalog here, all in one entry file (one per
    manifest cost a third of an empty file's step). A step that fails first leaves its
    committed files out of the catalog: the catalog then shows them not ingested, so
    the re-sync asks for them again, and a retry of the run records them here with the
    rest. False where they were recorded as they were committed (the synthesis program)."""
    made = {**_committed_earlier(context, storage, made), **made}
    if record and made:
        catalog.append(storage.storage, [manifest for manifests in made.values() for manifest in manifests])
    recounts: dict[str, dict[str, dict]] = {}  # asset -> file -> accounting
    with duckdb.connect() as con:  # one for the step: a connection costs about 15 ms, a recount 3
        for shard, manifests in made.items():
            for manifest in manifests:
                recounts.setdefault(manifest.asset, {})[shard] = accounting(con, manifest)
    for batch, files in run_files(context, storage).items():
        for asset, by_file in recounts.items():
            parts = {shard: next(m for m in made[shard] if m.asset == asset) for shard in files}
            metadata = (
                file_metadata(storage, parts[batch], by_file[batch], (extra or {}).get(batch, {}))
                if files == [batch]
                else batch_metadata(storage, parts, by_file, extra or {})
            )
            context.add_asset_metadata(metadata, asset_key=asset, partition_key=batch)
    several = len(context.assets_def.keys) > 1  # a multi-asset names its outputs after the assets; a plain asset has one, "result"
    for asset in recounts:
        value = {shard: next(m for m in manifests if m.asset == asset) for shard, manifests in made.items()}
        yield dg.Output(value, output_name=asset if several else "result")
    for asset, by_shard_recount in recounts.items():
        yield shard_check(asset, "rows_accounted", by_shard_recount, totals=("rows_in", "rows_out", "rows_rejected"))


def _committed_earlier(context: dg.AssetExecutionContext, storage: StorageResource, made: dict[str, list[Manifest]]) -> dict[str, list[Manifest]]:
    """The manifests of the run's files that ``each_shard`` skipped (committed by an
    earlier attempt of the run), read back so the run's output covers every file."""
    skipped = [shard for files in run_files(context, storage).values() for shard in files if shard not in made]
    st = storage.storage
    earlier = {shard: [st.read_manifest(key.to_user_string(), shard) for key in sorted(context.selected_asset_keys)] for shard in skipped}
    return {shard: [m for m in manifests if isinstance(m, Manifest)] for shard, manifests in earlier.items()}


def file_metadata(storage: StorageResource, manifest: Manifest, recount: dict, extra: dict) -> dict:
    """A partition of one file: its manifest's counts, samples and rule statistics."""
    return {**manifest_metadata(storage.storage, manifest), **rule_stats_metadata(manifest), **extra, "rows_accounted": recount["passed"]}


def batch_metadata(storage: StorageResource, parts: dict[str, Manifest], recounts: dict[str, dict], extra: dict[str, dict]) -> dict:
    """A partition of several files: the sums of their counts, each file's rows out (the
    first PARTS_SHOWN), and the samples of the first file that has rows."""
    reasons: Counter[str] = Counter()
    for manifest in parts.values():
        reasons.update(manifest.rejected_by_reason)
    first = next((m for m in parts.values() if m.rows_out), next(iter(parts.values())))
    samples = {k: v for k, v in manifest_metadata(storage.storage, first).items() if k in ("sample_rows", "sample_rejections", "preview")}
    return {
        "files": len(parts),
        "rows_in": sum(m.rows_in for m in parts.values()),
        "rows_out": sum(m.rows_out for m in parts.values()),
        "rows_rejected": sum(m.rows_rejected for m in parts.values()),
        "rejected_by_reason": dg.MetadataValue.json(dict(sorted(reasons.items()))),
        "rows_out_by_file": dg.MetadataValue.json({shard: m.rows_out for shard, m in list(parts.items())[:PARTS_SHOWN]}),
        **({"samples_from": first.partition or "", **samples} if samples else {}),
        **_merged(extra.get(shard, {}) for shard in parts),
        "rows_accounted": all(recounts[shard]["passed"] for shard in parts),
    }


def _merged(extras: Iterable[dict]) -> dict:
    """The files' extra metadata as one partition's: flags all true, numbers and counts
    summed, anything else kept when every file has the same value."""
    values: dict[str, list] = {}
    for extra in extras:
        for name, value in extra.items():
            values.setdefault(name, []).append(value)
    merged: dict = {}
    for name, seen in values.items():
        if all(isinstance(v, bool) for v in seen):
            merged[name] = all(seen)
        elif all(isinstance(v, int | float) for v in seen):
            merged[name] = sum(seen)
        elif all(isinstance(v, dict) for v in seen):
            total: Counter = Counter()
            for v in seen:
                total.update(v)
            merged[name] = dg.MetadataValue.json(dict(total))
        elif all(v == seen[0] for v in seen):
            merged[name] = seen[0]
    return merged


def shard_check(asset: str, check_name: str, results: dict[str, dict], totals: Iterable[str] = ()) -> dg.AssetCheckResult:
    """One check result for the shards of a run, from each shard's result (a dict with
    ``passed``): the ``totals`` summed over shards, and the shards that failed with their
    figures."""
    failed = {shard: result for shard, result in results.items() if not result["passed"]}
    metadata: dict = {"shards": len(results), "shards_failed": len(failed)}
    for name in totals:
        metadata[name] = sum(int(result[name]) for result in results.values())
    if failed:
        shown = dict(sorted(failed.items())[:FAILED_SHARDS_SHOWN])
        metadata["failed"] = dg.MetadataValue.json({shard: {k: v for k, v in r.items() if k != "passed"} for shard, r in shown.items()})
    return dg.AssetCheckResult(asset_key=asset, check_name=check_name, passed=not failed, metadata=metadata)
