"""Open-dataset sources: one static partition per dataset in the profile, read into the
common pair schema, then through the same rules, dedup, decontamination and document
filter as web pairs."""

import dagster as dg

from asagi_dagster.config import AsagiConfig
from asagi_dagster.core import write_outcomes
from asagi_dagster.datasets import DATASET_PAIRS, DATASET_PAIRS_VERSION, iter_dataset
from asagi_dagster.filters import schemas
from asagi_dagster.filters.screen import screen_dataset_pairs
from asagi_dagster.storage import Manifest, StageWriter
from assets.filters import filter_outputs, no_overlap_check
from assets.metadata import accounted, stage_results
from assets.shards import by_shard, dataset_partitions
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "datasets"


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The filter group's dataset half: each open dataset the profile lists read, screened
    and filtered (the partition set follows the profile), and its two jobs."""
    datasets = dataset_partitions(config)

    @dg.asset(
        group_name=GROUP,
        partitions_def=datasets,
        check_specs=[accounted("dataset_pairs")],
        description=(
            "An open image-text dataset (local Parquet/JSONL/imagefolder, or a hub id where reachable) "
            "in the common pair schema: image bytes, caption or question/answer, language, licence."
        ),
    )
    def dataset_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
        name = context.partition_key
        source = profile.settings.sources.datasets[name]
        with StageWriter(storage.storage, "dataset_pairs", name, DATASET_PAIRS, DATASET_PAIRS_VERSION) as out:
            out.source = {"licence": source.licence, "language": source.language, "from": source.hub_id or source.path or ""}
            write_outcomes(out, iter_dataset(name, source))
        yield from stage_results(storage, duckdb, out.manifest)

    @dg.asset(
        group_name=GROUP,
        partitions_def=datasets,
        check_specs=[accounted("screened_dataset_pairs")],
        description="A dataset's pairs through the Asagi rules and image safety (with the dataset's rule overrides), with image facts and hashes.",
    )
    def screened_dataset_pairs(
        context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource, dataset_pairs: Manifest
    ):
        name = context.partition_key
        settings = profile.settings
        with StageWriter(storage.storage, "screened_dataset_pairs", name, schemas.SCREENED_PAIRS, schemas.SCREENED_PAIRS_VERSION) as out:
            screen_dataset_pairs(storage.storage, dataset_pairs.data_url, out, settings.filters, settings.sources.datasets[name].rules)
        yield from stage_results(storage, duckdb, out.manifest)

    @dg.asset(
        group_name=GROUP,
        partitions_def=datasets,
        check_specs=[accounted("filtered_dataset_pairs"), no_overlap_check("filtered_dataset_pairs")],
        deps=["image_hash_index"],  # re-filtered by refilter_sensor when the index changes this dataset's decisions
        ins={"screened_dataset_pairs": by_shard(), "dataset_pairs": by_shard()},
        description="A dataset's screened pairs without benchmark images, duplicates (against every source) or document images.",
    )
    def filtered_dataset_pairs(
        context: dg.AssetExecutionContext,
        profile: ProfileResource,
        storage: StorageResource,
        duckdb: DuckDBResource,
        screened_dataset_pairs: dict[str, Manifest],
        dataset_pairs: dict[str, Manifest],
        benchmark_image_index: Manifest,
        document_image_reference: Manifest,
    ):
        yield from filter_outputs(context, profile, storage, duckdb, screened_dataset_pairs, dataset_pairs, benchmark_image_index, document_image_reference)

    ingest = dg.define_asset_job(
        "dataset_ingest",
        selection=dg.AssetSelection.assets("dataset_pairs", "screened_dataset_pairs"),
        description="Read one open dataset and screen its pairs.",
    )
    filtered = dg.define_asset_job(
        "filtered_dataset_splits",
        selection=dg.AssetSelection.assets("filtered_dataset_pairs"),
        description="Filter one dataset's screened pairs against the indexes (run after filter_indexes).",
    )
    return dg.Definitions(assets=[dataset_pairs, screened_dataset_pairs, filtered_dataset_pairs], jobs=[ingest, filtered])
