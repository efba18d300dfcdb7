"""Web-archive ingest: WARC shards -> documents and images -> image-text pairs and
interleaved documents -> pair images. One dynamic partition per shard."""

import dagster as dg

from asagi_dagster.config import AsagiConfig
from asagi_dagster.query import record_starts_check
from asagi_dagster.storage import Manifest, StageWriter
from asagi_dagster.web import schemas
from asagi_dagster.web.fetch import Fetcher
from asagi_dagster.web.inbox import Inbox, plan_sync, registration_batches
from asagi_dagster.web.ingest import extract_pages, ingest_warc
from asagi_dagster.web.pair_images import gather_pair_images
from assets.metadata import accounted, accounting_check, manifest_metadata
from assets.run_workers import fail_runs_with_gone_workers
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "web"
warc_shards = dg.DynamicPartitionsDefinition(name="warc_shards")


@dg.multi_asset(
    outs={
        "web_documents": dg.AssetOut(description="HTML responses of a WARC shard, decoded (url, fetch time, charset used, html).", group_name=GROUP),
        "web_images": dg.AssetOut(description="Image responses captured inside a WARC shard (url, content type, bytes).", group_name=GROUP),
    },
    check_specs=[
        accounted("web_documents"),
        accounted("web_images"),
        dg.AssetCheckSpec(
            "record_starts_accounted",
            asset="web_documents",
            description="records in the files of web_documents and web_images = record starts an independent scan of the raw WARC saw outside rejected spans",
        ),
    ],
    partitions_def=warc_shards,
)
def warc_records(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
    """Stream one WARC shard with FastWARC; every record becomes a row or a rejection, and
    every damaged span of the file one rejection."""
    shard = context.partition_key
    web = profile.settings.sources.web
    inbox = Inbox(web.inbox, profile.settings.storage.s3)
    fingerprint = inbox.fingerprint(shard)
    with (
        StageWriter(storage.storage, "web_documents", shard, schemas.WEB_DOCUMENTS, schemas.WEB_DOCUMENTS_VERSION) as docs,
        StageWriter(storage.storage, "web_images", shard, schemas.WEB_IMAGES, schemas.WEB_IMAGES_VERSION) as images,
    ):
        docs.source = images.source = {"shard_url": inbox.url_for(shard), "fingerprint": fingerprint}
        ingest_warc(lambda: inbox.open(shard), shard, docs, images, web)
    yield from _outputs(storage, duckdb, docs.manifest, images.manifest)
    with duckdb.connect() as con:
        result = record_starts_check(con, docs.manifest, images.manifest)
    yield dg.AssetCheckResult(
        asset_key="web_documents",
        check_name="record_starts_accounted",
        passed=result.pop("passed"),
        metadata=result,
    )


@dg.multi_asset(
    outs={
        "image_text_pairs": dg.AssetOut(description="One row per <img>/<picture>: absolute URL, alt, title, figcaption, nearest text before/after, page title and url.", group_name=GROUP),
        "interleaved_documents": dg.AssetOut(description="Per page, its ordered text blocks and image references (MMC4 style).", group_name=GROUP),
    },
    ins={"web_documents": dg.AssetIn()},
    check_specs=[accounted("image_text_pairs"), accounted("interleaved_documents")],
    partitions_def=warc_shards,
)
def page_structure(
    context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource, web_documents: Manifest
):
    """Parse every page once: its images become pairs, its reading order an interleaved doc."""
    shard = context.partition_key
    html = profile.settings.sources.web.html
    with (
        StageWriter(storage.storage, "image_text_pairs", shard, schemas.IMAGE_TEXT_PAIRS, schemas.IMAGE_TEXT_PAIRS_VERSION) as pairs,
        StageWriter(storage.storage, "interleaved_documents", shard, schemas.INTERLEAVED_DOCUMENTS, schemas.INTERLEAVED_DOCUMENTS_VERSION) as docs,
    ):
        extract_pages(storage.storage, web_documents.data_url, pairs, docs, html)
    yield from _outputs(storage, duckdb, pairs.manifest, docs.manifest)


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    check_specs=[accounted("pair_images")],
    description="Image bytes for each pair: from the shard's WARC when captured there, else downloaded politely (robots.txt, noai, rate limits).",
)
def pair_images(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    image_text_pairs: Manifest,
    web_images: Manifest,
):
    shard = context.partition_key
    downloader = profile.settings.sources.web.downloader
    with (
        StageWriter(storage.storage, "pair_images", shard, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out,
        Fetcher(downloader) as fetcher,
    ):
        origins = gather_pair_images(storage.storage, image_text_pairs.data_url, web_images.data_url, out, fetcher, downloader.workers)
    context.log.info(f"pair images by origin: {origins}")
    yield from _outputs(storage, duckdb, out.manifest, extra={"origins": origins})


def _outputs(storage: StorageResource, duckdb: DuckDBResource, *manifests: Manifest, extra: dict | None = None):
    for manifest in manifests:
        # A multi-asset names its outputs after the assets; a plain asset has one, "result".
        name = manifest.asset if len(manifests) > 1 else "result"
        yield dg.Output(manifest, output_name=name, metadata={**manifest_metadata(storage.storage, manifest), **(extra or {})})
    for manifest in manifests:
        yield accounting_check(duckdb, manifest)


web_ingest = dg.define_asset_job(
    "web_ingest",
    # Every per-shard asset downstream of the shard, filters included.
    selection=dg.AssetSelection.groups(GROUP) | dg.AssetSelection.assets("screened_pairs"),
    partitions_def=warc_shards,
    description="Ingest one WARC shard end to end: records, pages, pairs, their images, and the per-pair rules.",
)


def _run_requests(shards, tick: str | None = None) -> list[dg.RunRequest]:
    # The sensor's run key is the file's fingerprint, so one file version is ingested
    # once; the schedule adds its tick, re-requesting whatever is still out of sync.
    suffix = f"@{tick}" if tick else ""
    return [dg.RunRequest(partition_key=s.key, run_key=f"{s.key}@{s.fingerprint}{suffix}") for s in shards]


def _plan(context, profile: ProfileResource, storage: StorageResource, full: bool):
    settings = profile.settings
    inbox = Inbox(settings.sources.web.inbox, settings.storage.s3)
    registered = set(context.instance.get_dynamic_partitions(warc_shards.name))
    if not full:  # the sensor runs every minute: new files only, no manifest reads
        return plan_sync(inbox, registered, storage.storage)
    return plan_sync(inbox, registered, storage.storage, "web_documents", "pair_images")


_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _partitions_in_flight(context: dg.ScheduleEvaluationContext) -> set[str]:
    """Partitions with a run queued or running. A run whose worker was killed would stay
    STARTED, its shard busy for good: such runs are marked failed here and do not count."""
    runs = context.instance.get_runs(filters=dg.RunsFilter(job_name=web_ingest.name, statuses=_IN_FLIGHT))
    gone = {run.run_id for run in fail_runs_with_gone_workers(context.instance, runs)}
    for run_id in sorted(gone):
        context.log.warning(f"run {run_id} marked failed: its worker process is gone")
    return {run.tags.get("dagster/partition") for run in runs if run.run_id not in gone}


def build_inbox_automation(config: AsagiConfig) -> tuple[dg.SensorDefinition, dg.ScheduleDefinition]:
    web = config.sources.web

    @dg.sensor(
        job=web_ingest,
        minimum_interval_seconds=web.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new .warc/.warc.gz files in the inbox as shards and ingests them.",
    )
    def warc_inbox_sensor(context: dg.SensorEvaluationContext, profile: ProfileResource, storage: StorageResource):
        plan = _plan(context, profile, storage, full=False)
        for skipped in plan.skipped:
            context.log.warning(f"inbox file skipped: {skipped}")
        if not plan.new:
            return dg.SkipReason("no new shards in the inbox")
        return dg.SensorResult(
            run_requests=_run_requests(plan.new),
            dynamic_partitions_requests=[warc_shards.build_add_request(batch) for batch in registration_batches([s.key for s in plan.new])],
        )

    @dg.schedule(
        job=web_ingest,
        cron_schedule=web.resync_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Full re-sync of the inbox: new shards, changed shards and shards never ingested.",
    )
    def warc_inbox_resync(context: dg.ScheduleEvaluationContext, profile: ProfileResource, storage: StorageResource):
        plan = _plan(context, profile, storage, full=True)
        for skipped in plan.skipped:
            context.log.warning(f"inbox file skipped: {skipped}")
        if plan.new:
            for batch in registration_batches([s.key for s in plan.new]):
                context.instance.add_dynamic_partitions(warc_shards.name, batch)
        busy = _partitions_in_flight(context)  # queued or running: not out of sync, just not done
        shards = [s for s in plan.new + plan.changed if s.key not in busy]
        if not shards:
            return dg.SkipReason("inbox in sync, or its out-of-sync shards are already running")
        return _run_requests(shards, tick=context.scheduled_execution_time.isoformat())

    return warc_inbox_sensor, warc_inbox_resync
