"""Filtered splits: per shard the papers' per-pair rules, then across every source the
hash index (dedup) and the benchmark index (decontamination), then per shard the
filtered pairs with an audit that proves no benchmark image is left."""

import json
from collections.abc import Iterator

import dagster as dg
import numpy as np
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.config import AsagiConfig
from asagi_dagster.core import write_outcomes
from asagi_dagster.filters import schemas
from asagi_dagster.filters.decontam import BENCHMARK_INDEX, BENCHMARK_INDEX_VERSION, write_benchmark_index
from asagi_dagster.filters.dedup import screened_versions
from asagi_dagster.filters.documents import REFERENCE_SCHEMA, REFERENCE_VERSION, DocumentCheck, DocumentScorer, document_encoder, reference_rows
from asagi_dagster.filters.hash_index import (
    SHARD_ROWS_SCHEMA,
    SHARD_ROWS_VERSION,
    SyncResult,
    changed_since,
    index_rows_url,
    open_on_root,
    rewritten_rows,
    sync_shards,
    write_changes,
)
from asagi_dagster.filters.screen import screen_web_pairs
from asagi_dagster.filters.split import filter_partition
from asagi_dagster.query import benchmark_overlaps
from asagi_dagster.reference import REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION
from asagi_dagster.reference.scoring import load_scorer, write_reference_texts
from asagi_dagster.storage import Manifest, StageWriter, Storage
from asagi_dagster.web.batches import batch_keys_of
from assets.cli_hold import BUILD_WHEN_MISSING, automation_sensor, cli_holding, while_no_cli_runs
from assets.metadata import accounted, stage_results
from assets.pools import pool_limit
from assets.shards import by_shard, committed, dataset_partitions, each_shard, shard_batches, shard_check, shard_outputs
from assets.web import REQUESTED_BY_TAG, WARC_SHARDS, warc_shards
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "filters"

# The benchmark index when missing and again when a benchmark's items change, never before
# each is loaded; after a failed build new items are reason enough to try again.
BUILD_FROM_ITEMS = (
    ((dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()) | dg.AutomationCondition.any_deps_updated())
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)

INDEX_POOL = "image_hash_index"  # adds to the index must never run at once (the instance limits this pool to 1)
SAMPLE_SHOWN = 20  # shards listed in metadata; the whole list is in the changes file


def no_overlap_check(asset: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """``blocking``: a failed audit stops what depends on the asset in the same run."""
    return dg.AssetCheckSpec(
        "no_benchmark_overlap",
        asset=asset,
        blocking=blocking,
        description="No kept image is within the decontamination distance of a benchmark image or uses a benchmark's Visual Genome id.",
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    ins={"image_text_pairs": by_shard(), "pair_images": by_shard()},
    check_specs=[accounted("screened_pairs")],
    description=(
        "Web pairs that pass the Asagi rules (text length, ASCII-only, harmful keywords, image size, aspect ratio, "
        "single colour) and image safety, with the image facts and hashes later steps use; each rule's pass rate in metadata."
    ),
)
def screened_pairs(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    image_text_pairs: dict[str, Manifest],
    pair_images: dict[str, Manifest],
):
    settings = profile.settings.filters
    made = {}
    for shard in each_shard(context, storage):
        with StageWriter(storage.storage, "screened_pairs", shard, schemas.SCREENED_PAIRS, schemas.SCREENED_PAIRS_VERSION) as out:
            screen_web_pairs(storage.storage, image_text_pairs[shard].data_url, pair_images[shard].data_url, out, settings)
        made[shard] = committed(context, storage, out.manifest)
    yield from shard_outputs(context, storage, duckdb, made)


@dg.asset(
    group_name=GROUP,
    deps=["screened_pairs", "screened_dataset_pairs"],
    check_specs=[accounted("image_hash_index")],
    automation_condition=while_no_cli_runs(dg.AutomationCondition.eager()),
    pool=INDEX_POOL,
    description=(
        "Every distinct image screened so far (all shards and datasets): its sha256, perceptual hash, and which copy its "
        "exact- and near-duplicate cluster keeps, kept incrementally on the storage root (image_hash_index/state): each "
        "run adds the partitions screened since the last, replaces those screened again, and rewrites the index rows of "
        "the partitions whose keep/drop decisions changed (image_hash_index/shards). Never dependent on arrival order. "
        "Its data: the rows it rewrote; the partitions to re-filter are in metadata and image_hash_index/changes."
    ),
)
def image_hash_index(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    _check_index_pool(context)
    root = storage.storage
    versions, urls = screened_versions(root)
    with open_on_root(root, profile.settings.filters.dedup.max_hamming) as index:
        result = sync_shards(root, index, versions, urls)
        changed = bool(result.refilter or result.plan.remove)
        changes_url = write_changes(root, result) if changed else None  # a sync with nothing to do leaves no file
        index.clear_pending(result.refilter)  # named in the changes file: the sensor asks for them
        images = index.image_count()
    with StageWriter(root, "image_hash_index", None, SHARD_ROWS_SCHEMA, SHARD_ROWS_VERSION) as out:
        out.source = {"generation": str(result.generation), "changes": changes_url or ""}
        for count, rows in rewritten_rows(root, result.shard_rows):
            out.count_in(count)  # from each rows file's footer; the check recounts what this data file holds
            for row in rows:
                out.write(row)
    context.log.info(
        f"hash index generation {result.generation}: {images} distinct images; added {len(result.plan.add)}, replaced "
        f"{len(result.plan.replace)}, removed {len(result.plan.remove)} partitions; {len(result.refilter)} to re-filter"
    )
    yield from stage_results(storage, duckdb, out.manifest, **_sync_metadata(result, images, changes_url))


def _check_index_pool(context: dg.AssetExecutionContext) -> None:
    """Adds must run one at a time (on S3 the second would overwrite the first's index):
    refuse a pool that lets two run at once."""
    limit = pool_limit(context.instance, INDEX_POOL)
    if limit is None:
        context.log.warning(f"the Dagster pool {INDEX_POOL!r} has no limit: set it to 1 (dagster instance concurrency set {INDEX_POOL} 1)")
    elif limit > 1:
        raise ValueError(
            f"the Dagster pool {INDEX_POOL!r} lets {limit} index updates run at once; they must run one at a time: "
            f"dagster instance concurrency set {INDEX_POOL} 1"
        )


def _sync_metadata(result: SyncResult, images: int, changes_url: str | None) -> dict:
    return {
        "generation": result.generation,
        "distinct_images": images,
        "partitions_added": len(result.plan.add),
        "partitions_replaced": len(result.plan.replace),
        "partitions_removed": len(result.plan.remove),
        "refilter_count": len(result.refilter),
        "refilter_sample": dg.MetadataValue.json(result.refilter[:SAMPLE_SHOWN]),
        **({"changes": dg.MetadataValue.path(changes_url)} if changes_url else {}),
    }


def build_benchmark_image_index(config: AsagiConfig) -> dg.AssetsDefinition:
    """The decontamination index, downstream of every evaluated benchmark's items (when
    the profile evaluates any) and of the benchmarks it names by path."""
    evaluated = sorted(config.evaluation.benchmarks) if config.evaluation else []

    @dg.asset(
        name="benchmark_image_index",
        group_name=GROUP,
        deps=["benchmark_items"] if evaluated else [],
        check_specs=[accounted("benchmark_image_index")],
        automation_condition=while_no_cli_runs(BUILD_FROM_ITEMS if evaluated else BUILD_WHEN_MISSING),
        description=(
            "Perceptual hashes of every evaluation image, from the evaluated benchmarks' items (benchmark_items) and the "
            "benchmarks filters.decontamination.benchmarks names by path, and the Visual Genome ids of JA-VG-VQA-500's images."
        ),
    )
    def benchmark_image_index(profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
        filters = profile.settings.filters
        items = {BENCHMARKS[name]: _item_images(storage, name) for name in evaluated}
        with StageWriter(storage.storage, "benchmark_image_index", None, BENCHMARK_INDEX, BENCHMARK_INDEX_VERSION) as out:
            write_benchmark_index(items, filters.decontamination, filters.image_safety, out)
        benchmarks = {"from benchmark_items": evaluated, "from paths": sorted(filters.decontamination.benchmarks)}
        yield from stage_results(storage, duckdb, out.manifest, benchmarks=dg.MetadataValue.json(benchmarks))

    return benchmark_image_index


def _item_images(storage: StorageResource, benchmark: str) -> Iterator[dict]:
    """The image id and bytes of each of a benchmark's items, read from its latest items."""
    st = storage.storage
    if not st.exists(st.manifest_path("benchmark_items", benchmark)):
        raise dg.Failure(f"benchmark_items has no materialization for {benchmark}: load the benchmarks first (`asagi filter` does)")
    items = st.read_manifest("benchmark_items", benchmark)
    assert isinstance(items, Manifest)  # a table asset's manifest
    return st.iter_rows(st.strip_protocol(items.data_url), columns=["image_id", "bytes"])


@dg.asset(
    group_name=GROUP,
    check_specs=[accounted("document_image_reference")],
    automation_condition=while_no_cli_runs(BUILD_WHEN_MISSING),
    description=(
        "Embeddings of the document images (infographics, charts, diagrams) that training images are compared with, "
        "made by the profile's document encoder (models.document_encoder) from filters.document_filter.reference_images."
    ),
)
def document_image_reference(profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    config = profile.settings
    encoder = document_encoder(config.filters.document_filter, config.models)
    with StageWriter(storage.storage, "document_image_reference", None, REFERENCE_SCHEMA, REFERENCE_VERSION) as out:
        write_outcomes(out, reference_rows(config.filters.document_filter, encoder, config.filters.image_safety))
    yield from stage_results(storage, duckdb, out.manifest, encoder=encoder.name)


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    check_specs=[
        accounted("filtered_pairs"),
        no_overlap_check("filtered_pairs"),
    ],
    deps=["image_hash_index"],  # re-filtered by refilter_sensor when the index changes this shard's decisions
    ins={"screened_pairs": by_shard(), "pair_images": by_shard()},
    description=(
        "Screened pairs without benchmark images, duplicate images (exact and near, across every source), repeated "
        "(image, text) pairs, or images too similar to document images."
    ),
)
def filtered_pairs(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    screened_pairs: dict[str, Manifest],
    pair_images: dict[str, Manifest],
    benchmark_image_index: Manifest,
    document_image_reference: Manifest,
):
    yield from filter_outputs(context, profile, storage, duckdb, screened_pairs, pair_images, benchmark_image_index, document_image_reference)


def filter_outputs(
    context: dg.AssetExecutionContext,
    profile,
    storage,
    duckdb,
    screened: dict[str, Manifest],
    images: dict[str, Manifest],
    benchmarks: Manifest,
    documents_reference: Manifest,
):
    """The filtered asset of any source family, for each partition of the run: its
    outputs, accounting and decontamination audit."""
    filters = profile.settings.filters
    max_hamming = filters.decontamination.max_hamming
    documents = _document_check(profile, storage, documents_reference) if filters.document_filter.enabled else None
    asset = context.assets_def.key.path[-1]
    made, overlaps = {}, {}
    for partition in each_shard(context, storage):
        index_url = index_rows_url(storage.storage, screened[partition])
        with (
            StageWriter(storage.storage, asset, partition, schemas.FILTERED_PAIRS, schemas.FILTERED_PAIRS_VERSION) as out,
            duckdb.connect() as con,
        ):
            filter_partition(
                con,
                screened[partition].data_url,
                index_url,
                benchmarks.data_url,
                out,
                max_hamming,
                documents=documents,
                storage=storage.storage,
                images_url=images[partition].data_url,
            )
        made[partition] = committed(context, storage, out.manifest)
        overlaps[partition] = overlap_audit(duckdb, out.manifest, benchmarks, max_hamming)
    yield from shard_outputs(context, storage, duckdb, made, extra={p: {"overlapping_pairs": r["overlapping_pairs"]} for p, r in overlaps.items()})
    yield shard_check(asset, "no_benchmark_overlap", overlaps, totals=("overlapping_pairs",))


def overlap_check(duckdb: DuckDBResource, manifest: Manifest, benchmarks: Manifest, max_hamming: int) -> dg.AssetCheckResult:
    """The result of ``no_overlap_check`` for one written partition."""
    audit = overlap_audit(duckdb, manifest, benchmarks, max_hamming)
    return dg.AssetCheckResult(
        asset_key=manifest.asset,
        check_name="no_benchmark_overlap",
        passed=audit["passed"],
        metadata={"overlapping_pairs": audit["overlapping_pairs"], "examples": dg.MetadataValue.json(audit["examples"])},
    )


def overlap_audit(duckdb: DuckDBResource, manifest: Manifest, benchmarks: Manifest, max_hamming: int) -> dict:
    """The decontamination audit of a written partition (for ``no_overlap_check``)."""
    with duckdb.connect() as con:
        overlaps = benchmark_overlaps(con, manifest.data_url, benchmarks.data_url, max_hamming)
    return {"passed": not overlaps, "overlapping_pairs": len(overlaps), "examples": overlaps[:10]}


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    ins={"filtered_pairs": by_shard(), "web_documents": by_shard(), "pair_images": by_shard()},
    check_specs=[accounted("reference_texts")],
    automation_condition=while_no_cli_runs(dg.AutomationCondition.eager()),
    description=(
        "For each filtered web pair, the sentence of its page's main text (trafilatura) that a CLIP-style model "
        "(models.reference_scorer) scores closest to the image, or its own caption if that scores higher; with the score "
        "and the runner-ups' scores."
    ),
)
def reference_texts(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    filtered_pairs: dict[str, Manifest],
    web_documents: dict[str, Manifest],
    pair_images: dict[str, Manifest],
):
    config = profile.settings
    scorer = load_scorer(config.reference_texts, config.models)
    made = {}
    for shard in each_shard(context, storage):
        with StageWriter(storage.storage, "reference_texts", shard, REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION) as out:
            write_reference_texts(
                storage.storage,
                filtered_pairs[shard].data_url,
                web_documents[shard].data_url,
                pair_images[shard].data_url,
                out,
                config.reference_texts,
                scorer,
                config.filters.image_safety,
            )
        made[shard] = committed(context, storage, out.manifest)
    yield from shard_outputs(context, storage, duckdb, made, extra={shard: {"scorer": scorer.name} for shard in made})


def _document_check(profile: ProfileResource, storage: StorageResource, reference: Manifest) -> DocumentCheck:
    config = profile.settings
    settings = config.filters.document_filter
    encoder = document_encoder(config.filters.document_filter, config.models)
    rows = list(storage.storage.iter_rows(storage.storage.strip_protocol(reference.data_url), ["encoder", "embedding"]))
    if any(row["encoder"] != encoder.name for row in rows):
        raise ValueError(f"document_image_reference was embedded with another encoder than {encoder.name}: materialize it again")
    scorer = DocumentScorer(np.array([row["embedding"] for row in rows], dtype=np.float32), settings.method, settings.k)
    return DocumentCheck(encoder, scorer, settings.threshold, settings.batch_size, config.filters.image_safety)


filter_indexes = dg.define_asset_job(
    "filter_indexes",
    selection=dg.AssetSelection.assets("image_hash_index", "benchmark_image_index", "document_image_reference"),
    description=(
        "Bring the global image-hash index (dedup) up to date with what was screened, and "
        "build the benchmark image index (decontamination) and the document reference."
    ),
)

filtered_splits = dg.define_asset_job(
    "filtered_splits",
    selection=dg.AssetSelection.assets("filtered_pairs", "reference_texts"),
    description="Filter one shard's screened pairs against the indexes (run after filter_indexes), then find their reference texts.",
)


def build_filters_automation(interval_s: int) -> dg.AutomationConditionSensorDefinition:
    """Runs the automation conditions above: after shards are screened the index adds them;
    re-filtering after the index is refilter_sensor's (only the partitions it changed)."""
    return automation_sensor(
        "filters_automation",
        target=dg.AssetSelection.groups(GROUP, "datasets"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_s,
        description="Adds newly screened shards to the dedup index, builds the benchmark index and document reference when missing, finds reference texts.",
    )


INDEX_KEY = dg.AssetKey("image_hash_index")
# What is made again when the index changes a screened partition's decisions, per screened asset.
REFILTERED = {"screened_pairs": ("filtered_pairs", "reference_texts"), "screened_dataset_pairs": ("filtered_dataset_pairs",)}
REFILTER_TARGET = dg.AssetSelection.assets(*(asset for assets in REFILTERED.values() for asset in assets))
MATERIALIZATIONS_PER_TICK = 1000


def refilter_subset(shards: list[str], warc_keys: set[str], datasets: dg.PartitionsDefinition) -> AssetGraphSubset | None:
    """The refiltered assets' partitions for index shard keys ("<screened asset>/<partition>");
    partitions no longer registered (or no longer in the profile) are left out."""
    by_asset: dict[str, list[str]] = {}
    for shard in shards:
        asset, partition = shard.split("/", 1)
        by_asset.setdefault(asset, []).append(partition)
    dataset_keys = set(datasets.get_partition_keys())
    subsets = {}
    for screened, partitions_def, known in (("screened_pairs", warc_shards, warc_keys), ("screened_dataset_pairs", datasets, dataset_keys)):
        keys = [key for key in by_asset.get(screened, []) if key in known]
        if keys:
            for asset in REFILTERED[screened]:
                subsets[dg.AssetKey(asset)] = partitions_def.subset_with_partition_keys(keys)
    return AssetGraphSubset(partitions_subsets_by_asset_key=subsets) if subsets else None  # type: ignore[call-arg]


def as_partitions(storage: Storage, shards: list[str], warc_keys: set[str]) -> list[str]:
    """Index shard keys ("<screened asset>/<file>") with each web file replaced by the
    partition that holds it (a batch of files, D111); files no longer registered drop out."""
    screened = "screened_pairs/"
    files = [shard.removeprefix(screened) for shard in shards if shard.startswith(screened)]
    batch_of = batch_keys_of(storage, warc_keys, files)
    web = {f"{screened}{batch_of[file]}" for file in files if file in batch_of}
    return sorted(web | {shard for shard in shards if not shard.startswith(screened)})


def refiltered_since(instance: dg.DagsterInstance, shards: list[str], index_storage_id: int) -> set[str]:
    """The index shard keys whose filtered partition was materialized after the index
    materialization ``index_storage_id`` (an `asagi filter` did it): nothing to re-filter."""
    done: set[str] = set()
    for screened, refiltered in REFILTERED.items():
        keys = {shard.split("/", 1)[1] for shard in shards if shard.startswith(f"{screened}/")}
        if keys:
            latest = instance.get_latest_storage_id_by_partition(dg.AssetKey(refiltered[0]), dg.DagsterEventType.ASSET_MATERIALIZATION, keys)
            done.update(f"{screened}/{key}" for key, storage_id in latest.items() if storage_id > index_storage_id)
    return done


def _index_generation(record) -> int | None:
    entry = record.event_log_entry.asset_materialization.metadata.get("generation")
    return None if entry is None else int(entry.value)  # None: written before the index was incremental


def build_refilter_sensor(datasets: dg.PartitionsDefinition, interval_s: int) -> dg.SensorDefinition:
    """``datasets``: the dataset partitions of filtered_dataset_pairs (they follow the profile)."""

    @dg.sensor(
        asset_selection=REFILTER_TARGET,  # a sensor may ask for a backfill only of an asset selection
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "After each image_hash_index materialization, re-filters in one backfill exactly the partitions it reports "
            "(the ones it added or replaced, and those whose keep/drop decisions it changed), not every shard."
        ),
    )
    def refilter_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
        held = cli_holding(context.instance)
        if held:
            return dg.SkipReason(f"{held}; index changes wait for it to end")
        after_id, after_generation = json.loads(context.cursor) if context.cursor else (None, 0)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=INDEX_KEY, after_storage_id=after_id), limit=MATERIALIZATIONS_PER_TICK, ascending=True
        ).records
        if not records:
            return dg.SkipReason("image_hash_index not materialized since the last tick")
        generations = [g for g in map(_index_generation, records) if g is not None]
        generation = max(generations) if generations else after_generation
        shards = changed_since(storage.storage, after_generation, generation)
        warc_keys = set(context.instance.get_dynamic_partitions(WARC_SHARDS)) if shards else set()
        shards = as_partitions(storage.storage, shards, warc_keys)
        shards = sorted(set(shards) - refiltered_since(context.instance, shards, records[-1].storage_id))
        cursor = json.dumps([records[-1].storage_id, generation])
        subset = refilter_subset(shards, warc_keys, datasets)
        if subset is None:
            return dg.SensorResult(skip_reason=f"index generation {generation} changed no partition's decisions", cursor=cursor)
        context.log.info(f"index generation {generation}: re-filtering {len(shards)} partitions: {', '.join(shards[:SAMPLE_SHOWN])}")
        request = dg.RunRequest.for_asset_graph_subset(subset, tags={REQUESTED_BY_TAG: "refilter_sensor"})
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return refilter_sensor


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The filter group's web half: screening and filtering per shard (batched), the three
    indexes, reference texts, their jobs, and the sensors that build missing indexes and
    re-filter what a changed index decides differently."""
    batches = shard_batches(config.sources.web.shards_per_run)
    return dg.Definitions(
        assets=[
            *(asset.with_attributes(backfill_policy=batches) for asset in (screened_pairs, filtered_pairs, reference_texts)),
            image_hash_index,
            build_benchmark_image_index(config),
            document_image_reference,
        ],
        jobs=[filter_indexes, filtered_splits],
        sensors=[
            build_filters_automation(config.dagster.automation_interval_s),
            build_refilter_sensor(dataset_partitions(config), config.dagster.automation_interval_s),
        ],
    )
