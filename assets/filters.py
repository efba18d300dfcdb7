"""Filtered splits: per shard, the papers' per-pair rules over each pair and its image."""

import dagster as dg

from asagi_dagster.filters import schemas
from asagi_dagster.filters.screen import screen_web_pairs
from asagi_dagster.storage import Manifest, StageWriter
from assets.metadata import accounting_check, manifest_metadata, rule_stats_metadata
from assets.web import warc_shards
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "filters"


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    check_specs=[dg.AssetCheckSpec("rows_accounted", asset="screened_pairs", description="rows in = rows out + rows rejected, recounted from the files")],
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
    manifest = out.manifest
    yield dg.Output(manifest, metadata={**manifest_metadata(storage.storage, manifest), **rule_stats_metadata(manifest)})
    yield accounting_check(duckdb, manifest)
