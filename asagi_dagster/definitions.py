"""The Dagster code location: every asset, check, job, sensor and schedule, with the
resources of the active profile (ASAGI_CONFIG, default configs/local.yaml).

The only module of the library that imports dagster.
"""

import dagster as dg

from asagi_dagster.config import load_config, profile_path
from assets import filters, synthesis, training, web
from assets.datasets import build_dataset_assets
from assets.evaluation import build_evaluation_assets
from assets.shards import shard_batches
from resources import build_resources


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    path = str(config_path or profile_path())
    config = load_config(path)
    sensor, schedule = web.build_inbox_automation(config)
    dataset_assets, dataset_jobs = build_dataset_assets(config)
    dataset_partitions = next(a.partitions_def for a in dataset_assets if a.key == dg.AssetKey("filtered_dataset_pairs"))
    shard_corpora, dataset_corpora, synthesis_jobs = synthesis.build_synthesis_assets(config)
    batches = shard_batches(config.sources.web.shards_per_run)

    def per_shard(*assets: dg.AssetsDefinition) -> list[dg.AssetsDefinition]:
        return [asset.with_attributes(backfill_policy=batches) for asset in assets]

    training_assets, training_job = training.build_training_assets(config)
    evaluation_assets, evaluation_jobs, evaluation_sensors = build_evaluation_assets(config)
    return dg.Definitions(
        assets=[
            *per_shard(web.warc_records, web.page_structure, web.pair_images, filters.screened_pairs),
            filters.image_hash_index,
            filters.benchmark_image_index,
            filters.document_image_reference,
            *per_shard(filters.filtered_pairs, filters.reference_texts),
            *dataset_assets,
            *per_shard(*shard_corpora),
            *dataset_corpora,
            *training_assets,
            *evaluation_assets,
        ],
        jobs=[
            web.web_ingest,
            filters.filter_indexes,
            filters.filtered_splits,
            *dataset_jobs,
            *synthesis_jobs,
            training_job,
            *evaluation_jobs,
        ],
        sensors=[sensor, filters.filters_automation, filters.build_refilter_sensor(dataset_partitions), *evaluation_sensors],
        schedules=[schedule],
        resources=build_resources(path, config),
        # Steps run in the run's own process: a step in a fresh process re-imports the code
        # location (seconds each), which dominated short per-shard runs. GPU jobs whose
        # steps can run side by side keep the multiprocess executor (synthesized_corpora).
        executor=dg.in_process_executor,
    )


defs = build_definitions()
