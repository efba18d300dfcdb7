"""Filtered splits: per shard the papers' per-pair rules, then across every source the
hash index (dedup) and the benchmark index (decontamination), then per shard the
filtered pairs with an audit that proves no benchmark image is left."""

import dagster as dg
import numpy as np

from asagi_dagster.filters import schemas, write_outcomes
from asagi_dagster.filters.documents import REFERENCE_SCHEMA, REFERENCE_VERSION, DocumentCheck, DocumentScorer, document_encoder, reference_rows
from asagi_dagster.filters.decontam import BENCHMARK_INDEX, BENCHMARK_INDEX_VERSION, write_benchmark_index
from asagi_dagster.filters.dedup import INDEX_SCHEMA, INDEX_VERSION, write_hash_index
from asagi_dagster.filters.screen import screen_web_pairs
from asagi_dagster.filters.split import filter_partition
from asagi_dagster.query import benchmark_overlaps
from asagi_dagster.reference import REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION
from asagi_dagster.reference.scoring import load_scorer, write_reference_texts
from asagi_dagster.storage import Manifest, StageWriter
from assets.metadata import accounted, accounting_check, manifest_metadata, rule_stats_metadata
from assets.web import warc_shards
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "filters"

# Built once when missing (on_missing would skip an asset missing from the start);
# a failed build waits for a person rather than retrying every tick.
BUILD_WHEN_MISSING = dg.AutomationCondition.missing() & ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.execution_failed()

# Re-filter every partition when the index is rebuilt (a new shard can make an old
# shard's copy a duplicate); a new partition alone waits for the index to cover it.
REFILTER_ON_NEW_INDEX = (
    dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets("image_hash_index")).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)


def no_overlap_check(asset: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """``blocking``: a failed audit stops what depends on the asset in the same run."""
    return dg.AssetCheckSpec(
        "no_benchmark_overlap", asset=asset, blocking=blocking,
        description="No kept image is within the decontamination distance of a benchmark image or uses a benchmark's Visual Genome id.",
    )


def output(storage: StorageResource, manifest: Manifest, **extra) -> dg.Output:
    return dg.Output(manifest, metadata={**manifest_metadata(storage.storage, manifest), **rule_stats_metadata(manifest), **extra})


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
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
    image_text_pairs: Manifest,
    pair_images: Manifest,
):
    settings = profile.settings.filters
    with StageWriter(storage.storage, "screened_pairs", context.partition_key, schemas.SCREENED_PAIRS, schemas.SCREENED_PAIRS_VERSION) as out:
        screen_web_pairs(storage.storage, image_text_pairs.data_url, pair_images.data_url, out, settings)
    yield output(storage, out.manifest)
    yield accounting_check(duckdb, out.manifest)


@dg.asset(
    group_name=GROUP,
    deps=["screened_pairs", "screened_dataset_pairs"],
    check_specs=[accounted("image_hash_index")],
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "Every distinct image screened so far (all shards and datasets): its sha256, perceptual hash, and which copy its "
        "exact- and near-duplicate cluster keeps. Rebuilt whole, so the result never depends on arrival order."
    ),
)
def image_hash_index(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    with StageWriter(storage.storage, "image_hash_index", None, INDEX_SCHEMA, INDEX_VERSION) as out, duckdb.connect() as con:
        covered = write_hash_index(storage.storage, con, out, profile.settings.filters.dedup.max_hamming)
        out.source = {"covers": ",".join(f"{m.asset}/{m.partition}" for m in covered)}
    context.log.info(f"hash index over {len(covered)} screened partitions: {out.manifest.rows_out} distinct images")
    yield output(storage, out.manifest, screened_partitions=len(covered))
    yield accounting_check(duckdb, out.manifest)


@dg.asset(
    group_name=GROUP,
    check_specs=[accounted("benchmark_image_index")],
    automation_condition=BUILD_WHEN_MISSING,
    description=(
        "Perceptual hashes of every evaluation image (Heron-Bench, JA-VLM-Bench-In-the-Wild, JA-VG-VQA-500) and the "
        "Visual Genome ids JA-VG-VQA-500 uses, from the profile's filters.decontamination.benchmarks paths."
    ),
)
def benchmark_image_index(profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    filters = profile.settings.filters
    with StageWriter(storage.storage, "benchmark_image_index", None, BENCHMARK_INDEX, BENCHMARK_INDEX_VERSION) as out:
        write_benchmark_index(filters.decontamination, filters.image_safety, out)
    yield output(storage, out.manifest, benchmarks=dg.MetadataValue.json(sorted(filters.decontamination.benchmarks)))
    yield accounting_check(duckdb, out.manifest)


@dg.asset(
    group_name=GROUP,
    check_specs=[accounted("document_image_reference")],
    automation_condition=BUILD_WHEN_MISSING,
    description=(
        "Embeddings of the document images (infographics, charts, diagrams) that training images are compared with, "
        "made by the profile's document encoder (models.document_encoder) from filters.document_filter.reference_images."
    ),
)
def document_image_reference(profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    config = profile.settings
    encoder = document_encoder(config)
    with StageWriter(storage.storage, "document_image_reference", None, REFERENCE_SCHEMA, REFERENCE_VERSION) as out:
        write_outcomes(out, reference_rows(config.filters.document_filter, encoder, config.filters.image_safety))
    yield output(storage, out.manifest, encoder=encoder.name)
    yield accounting_check(duckdb, out.manifest)


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    check_specs=[
        accounted("filtered_pairs"),
        no_overlap_check("filtered_pairs"),
    ],
    automation_condition=REFILTER_ON_NEW_INDEX,
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
    screened_pairs: Manifest,
    pair_images: Manifest,
    image_hash_index: Manifest,
    benchmark_image_index: Manifest,
    document_image_reference: Manifest,
):
    yield from filter_outputs(
        "filtered_pairs", context.partition_key, profile, storage, duckdb,
        screened_pairs, pair_images, image_hash_index, benchmark_image_index, document_image_reference,
    )


def filter_outputs(asset: str, partition: str, profile, storage, duckdb, screened: Manifest, images: Manifest, index: Manifest, benchmarks: Manifest, documents_reference: Manifest):
    """The filtered asset of any source family: its output, accounting and decontamination audit."""
    filters = profile.settings.filters
    max_hamming = filters.decontamination.max_hamming
    documents = _document_check(profile, storage, documents_reference) if filters.document_filter.enabled else None
    with (
        StageWriter(storage.storage, asset, partition, schemas.FILTERED_PAIRS, schemas.FILTERED_PAIRS_VERSION) as out,
        duckdb.connect() as con,
    ):
        filter_partition(
            con, screened.data_url, index.data_url, benchmarks.data_url, out, max_hamming,
            documents=documents, storage=storage.storage, images_url=images.data_url,
        )
    yield output(storage, out.manifest)
    yield accounting_check(duckdb, out.manifest)
    yield overlap_check(duckdb, out.manifest, benchmarks, max_hamming)


def overlap_check(duckdb: DuckDBResource, manifest: Manifest, benchmarks: Manifest, max_hamming: int) -> dg.AssetCheckResult:
    """The decontamination audit of a written partition (result of ``no_overlap_check``)."""
    with duckdb.connect() as con:
        overlaps = benchmark_overlaps(con, manifest.data_url, benchmarks.data_url, max_hamming)
    return dg.AssetCheckResult(
        asset_key=manifest.asset,
        check_name="no_benchmark_overlap",
        passed=not overlaps,
        metadata={"overlapping_pairs": len(overlaps), "examples": dg.MetadataValue.json(overlaps[:10])},
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    check_specs=[accounted("reference_texts")],
    automation_condition=dg.AutomationCondition.eager(),
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
    filtered_pairs: Manifest,
    web_documents: Manifest,
    pair_images: Manifest,
):
    config = profile.settings
    scorer = load_scorer(config)
    with StageWriter(storage.storage, "reference_texts", context.partition_key, REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION) as out:
        write_reference_texts(
            storage.storage, filtered_pairs.data_url, web_documents.data_url, pair_images.data_url, out,
            config.reference_texts, scorer, config.filters.image_safety,
        )
    yield output(storage, out.manifest, scorer=scorer.name)
    yield accounting_check(duckdb, out.manifest)


def _document_check(profile: ProfileResource, storage: StorageResource, reference: Manifest) -> DocumentCheck:
    config = profile.settings
    settings = config.filters.document_filter
    encoder = document_encoder(config)
    rows = list(storage.storage.iter_rows(storage.storage.strip_protocol(reference.data_url), ["encoder", "embedding"]))
    if any(row["encoder"] != encoder.name for row in rows):
        raise ValueError(f"document_image_reference was embedded with another encoder than {encoder.name}: materialize it again")
    scorer = DocumentScorer(np.array([row["embedding"] for row in rows], dtype=np.float32), settings.method, settings.k)
    return DocumentCheck(encoder, scorer, settings.threshold, settings.batch_size, config.filters.image_safety)


filter_indexes = dg.define_asset_job(
    "filter_indexes",
    selection=dg.AssetSelection.assets("image_hash_index", "benchmark_image_index", "document_image_reference"),
    description="Rebuild the global image-hash index (dedup), the benchmark image index (decontamination) and the document reference.",
)

filtered_splits = dg.define_asset_job(
    "filtered_splits",
    selection=dg.AssetSelection.assets("filtered_pairs", "reference_texts"),
    partitions_def=warc_shards,
    description="Filter one shard's screened pairs against the indexes (run after filter_indexes), then find their reference texts.",
)

# Runs the automation conditions above: after shards are screened the index is rebuilt,
# after the index every shard is re-filtered, without anyone pressing a button.
filters_automation = dg.AutomationConditionSensorDefinition(
    "filters_automation",
    target=dg.AssetSelection.groups(GROUP, "datasets"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Rebuilds the dedup/benchmark indexes when shards are screened, then re-filters every shard.",
)
