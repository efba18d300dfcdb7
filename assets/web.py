"""Web-archive ingest: WARC shards -> documents and images -> image-text pairs and
interleaved documents -> pair images. One dynamic partition per shard."""

from collections import Counter
from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id
from dagster._time import get_current_timestamp

from asagi_dagster.config import AsagiConfig
from asagi_dagster.query import record_starts_check
from asagi_dagster.storage import Manifest, StageWriter, Storage
from asagi_dagster.web import schemas
from asagi_dagster.web.batches import batch_keys_of, commit_batches, make_batches, registered_files
from asagi_dagster.web.fetch import Fetcher
from asagi_dagster.web.inbox import Inbox, ShardFile, plan_sync, registration_batches
from asagi_dagster.web.ingest import extract_pages, ingest_warc, reject_missing_file
from asagi_dagster.web.pair_images import gather_pair_images
from assets.cli_hold import cli_holding
from assets.metadata import accounted
from assets.pools import pool_limit
from assets.run_workers import fail_runs_with_gone_workers
from assets.shards import by_shard, committed, each_shard, shard_batches, shard_check, shard_outputs
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "web"
REQUESTED_BY_TAG = "asagi/requested_by"  # which automation asked for a backfill
WARC_SHARDS = "warc_shards"  # the partitions' name (DynamicPartitionsDefinition.name is optional)
warc_shards = dg.DynamicPartitionsDefinition(name=WARC_SHARDS)


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
    """Stream each WARC shard of the run with FastWARC; every record becomes a row or a
    rejection, and every damaged span of the file one rejection."""
    web = profile.settings.sources.web
    inbox = Inbox(web.inbox, profile.settings.storage.s3)
    made, starts = {}, {}
    with duckdb.connect() as con:  # the record-starts scans' connection, one for the step
        for shard in each_shard(context, storage):
            fingerprint = _fingerprint_if_present(inbox, shard)
            with (
                StageWriter(storage.storage, "web_documents", shard, schemas.WEB_DOCUMENTS, schemas.WEB_DOCUMENTS_VERSION) as docs,
                StageWriter(storage.storage, "web_images", shard, schemas.WEB_IMAGES, schemas.WEB_IMAGES_VERSION) as images,
            ):
                docs.source = images.source = {"shard_url": inbox.url_for(shard), "fingerprint": fingerprint or ""}
                if fingerprint is None:
                    context.log.warning(f"{shard}: no longer in the inbox, recorded as missing_warc_file")
                    reject_missing_file(shard, docs, images)
                else:
                    ingest_warc(lambda: inbox.open(shard), shard, docs, images, web)
            made[shard] = committed(context, storage, docs.manifest, images.manifest)
            starts[shard] = record_starts_check(con, docs.manifest, images.manifest)
    yield from shard_outputs(context, storage, duckdb, made, extra={s: {"record_starts_accounted": r["passed"]} for s, r in starts.items()})
    yield shard_check("web_documents", "record_starts_accounted", starts, totals=("record_starts", "records_in_files"))


def _fingerprint_if_present(inbox: Inbox, shard: str) -> str | None:
    try:
        return inbox.fingerprint(shard)
    except FileNotFoundError:
        return None


@dg.multi_asset(
    outs={
        "image_text_pairs": dg.AssetOut(
            description="One row per `<img>` or `<picture>`: absolute URL, alt, title, figcaption, nearest text before/after, page title and url.",
            group_name=GROUP,
        ),
        "interleaved_documents": dg.AssetOut(description="Per page, its ordered text blocks and image references (MMC4 style).", group_name=GROUP),
    },
    ins={"web_documents": by_shard()},
    check_specs=[accounted("image_text_pairs"), accounted("interleaved_documents")],
    partitions_def=warc_shards,
)
def page_structure(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    web_documents: dict[str, Manifest],
):
    """Parse every page once: its images become pairs, its reading order an interleaved doc."""
    html = profile.settings.sources.web.html
    made = {}
    for shard in each_shard(context, storage):
        with (
            StageWriter(storage.storage, "image_text_pairs", shard, schemas.IMAGE_TEXT_PAIRS, schemas.IMAGE_TEXT_PAIRS_VERSION) as pairs,
            StageWriter(storage.storage, "interleaved_documents", shard, schemas.INTERLEAVED_DOCUMENTS, schemas.INTERLEAVED_DOCUMENTS_VERSION) as docs,
        ):
            extract_pages(storage.storage, web_documents[shard].data_url, pairs, docs, html)
        made[shard] = committed(context, storage, pairs.manifest, docs.manifest)
    yield from shard_outputs(context, storage, duckdb, made)


# The pool every pair_images step downloads in. Its limit is the profile's
# downloader.downloaders: each step keeps that share of every host's budget, so the
# limit is what keeps many shards downloading at once within one host's budget.
IMAGE_DOWNLOADS_POOL = "image_downloads"


@dg.asset(
    group_name=GROUP,
    partitions_def=warc_shards,
    ins={"image_text_pairs": by_shard(), "web_images": by_shard()},
    check_specs=[accounted("pair_images")],
    pool=IMAGE_DOWNLOADS_POOL,
    description="Image bytes for each pair: from the shard's WARC when captured there, else downloaded politely (robots.txt, noai, rate limits).",
)
def pair_images(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    image_text_pairs: dict[str, Manifest],
    web_images: dict[str, Manifest],
):
    downloader = profile.settings.sources.web.downloader
    _check_download_pool(context, downloader.downloaders)
    made, origins = {}, {}
    with Fetcher(downloader) as fetcher:  # one per run: its robots.txt and host budgets serve every shard
        for shard in each_shard(context, storage):
            with StageWriter(storage.storage, "pair_images", shard, schemas.PAIR_IMAGES, schemas.PAIR_IMAGES_VERSION) as out:
                origins[shard] = gather_pair_images(
                    storage.storage, image_text_pairs[shard].data_url, web_images[shard].data_url, out, fetcher, downloader.workers
                )
            made[shard] = committed(context, storage, out.manifest)
    by_origin: Counter[str] = Counter()
    for counts in origins.values():
        by_origin.update(counts)
    context.log.info(f"pair images by origin, all files of the run: {dict(by_origin)}")
    yield from shard_outputs(context, storage, duckdb, made, extra={s: {"origins": o} for s, o in origins.items()})


def _check_download_pool(context: dg.AssetExecutionContext, downloaders: int) -> None:
    """Refuse to download when more steps may download at once than the budgets were
    shared out for: every host would get more than its per-host budget."""
    limit = pool_limit(context.instance, IMAGE_DOWNLOADS_POOL)
    if limit is None:
        context.log.warning(
            f"the Dagster pool {IMAGE_DOWNLOADS_POOL!r} has no limit: shards downloading at once each spend a 1/{downloaders} "
            f"share of every host's budget, so more than {downloaders} at once overspend it. Set the limit: "
            f"dagster instance concurrency set {IMAGE_DOWNLOADS_POOL} {downloaders}"
        )
    elif limit > downloaders:
        raise ValueError(
            f"the Dagster pool {IMAGE_DOWNLOADS_POOL!r} lets {limit} steps download at once, but the profile shares each host's "
            f"budget among downloader.downloaders = {downloaders}: set one to the other "
            f"(dagster instance concurrency set {IMAGE_DOWNLOADS_POOL} {downloaders}, or downloaders: {limit})"
        )


# The per-shard assets, in the order a shard goes through them: what web_ingest runs and
# what the inbox automation's backfills target.
INGEST_ASSETS = ("web_documents", "web_images", "image_text_pairs", "interleaved_documents", "pair_images", "screened_pairs")

web_ingest = dg.define_asset_job(
    "web_ingest",
    selection=dg.AssetSelection.assets(*INGEST_ASSETS),
    description="Ingest one WARC shard end to end: records, pages, pairs, their images, and the per-pair rules.",
)


def register_new(instance: dg.DagsterInstance, storage: Storage, new: list[ShardFile], files_per_partition: int) -> list[str]:
    """New inbox files as partitions, batched (web/batches.py): each batch's list is
    committed before its key is added. The keys added."""
    batches = make_batches(new, files_per_partition)
    commit_batches(storage, batches)
    keys = [batch.key for batch in batches]
    # Added here rather than as a sensor's dynamic_partitions_requests: the daemon looks
    # each requested key up on its own (20,000 queries for 20,000 new files).
    for chunk in registration_batches(keys):
        instance.add_dynamic_partitions(WARC_SHARDS, chunk)
    return keys


def _ingest_subset(keys: list[str]) -> AssetGraphSubset:
    shards = warc_shards.subset_with_partition_keys(keys)
    # The ignore: mypy reads the NamedTuple's `__hash__ = None` as a third field, one without a default.
    return AssetGraphSubset(partitions_subsets_by_asset_key={dg.AssetKey(asset): shards for asset in INGEST_ASSETS})  # type: ignore[call-arg]


def _ingest_backfill_request(keys: list[str], requested_by: str) -> dg.RunRequest:
    """One backfill for any number of shards, not one run request each: the sensor daemon
    looks every run key up one query at a time, so 20,000 run requests made a tick of
    minutes; the backfill daemon launches the runs at the pace the run queue allows, and
    the UI shows each shard's status on the backfill's page."""
    return dg.RunRequest.for_asset_graph_subset(_ingest_subset(keys), tags={REQUESTED_BY_TAG: requested_by})


def submit_ingest_backfill(instance: dg.DagsterInstance, keys: list[str], requested_by: str) -> str:
    """What the sensor daemon does with ``_ingest_backfill_request``; schedules cannot ask
    the daemon for a backfill, so the re-sync submits its own."""
    backfill_id = make_new_backfill_id()
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=backfill_id,
            backfill_timestamp=get_current_timestamp(),
            tags={REQUESTED_BY_TAG: requested_by},
            dynamic_partitions_store=instance,
            asset_graph_subset=_ingest_subset(keys),
            title=None,
            description=None,
            run_config=None,
        )
    )
    return backfill_id


def _plan(profile: ProfileResource, storage: StorageResource, partitions: Sequence[str], full: bool, after: str):
    """The plan for the window of the inbox that starts after ``after`` (``partitions``: the registered keys)."""
    settings = profile.settings
    inbox = Inbox(settings.sources.web.inbox, settings.storage.s3)
    registered = registered_files(storage.storage, partitions)
    window = (after, settings.sources.web.scan_files_per_tick)
    if not full:  # the sensor runs every minute: new files only, no manifest reads
        return plan_sync(inbox, registered, storage.storage, window=window)
    # In sync: the file's fingerprint is the one ingested, and the shard reached the last
    # ingest asset (a run whose last step failed leaves it out of sync).
    return plan_sync(inbox, registered, storage.storage, INGEST_ASSETS[0], INGEST_ASSETS[-1], window=window)


# Where the re-sync's next window of the inbox starts (a schedule has no cursor of its own).
RESYNC_CURSOR_KEY = "asagi/resync_after"


def _resync_after(instance: dg.DagsterInstance) -> str:
    return instance.run_storage.get_cursor_values({RESYNC_CURSOR_KEY}).get(RESYNC_CURSOR_KEY) or ""


_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _shards_in_flight(context: dg.ScheduleEvaluationContext) -> set[str]:
    """Shards with an unfinished ingest backfill, or a run queued or running (from a
    backfill, ``asagi ingest`` or the UI). A run whose worker was killed would stay
    STARTED, its shard busy for good: such runs are marked failed here and do not count."""
    runs = [run for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT)) if _ingests_a_shard(run)]
    gone = {run.run_id for run in fail_runs_with_gone_workers(context.instance, runs)}
    for run_id in sorted(gone):
        context.log.warning(f"run {run_id} marked failed: its worker process is gone")
    registered = context.instance.get_dynamic_partitions(WARC_SHARDS) if any(_RANGE_START in r.tags for r in runs) else []
    position = {shard: i for i, shard in enumerate(registered)}
    busy = {shard for run in runs if run.run_id not in gone for shard in _run_shards(run, registered, position)}
    for backfill in context.instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        busy |= _backfill_shards(backfill)
    return busy


_RANGE_START, _RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _run_shards(run: dg.DagsterRun, registered: Sequence[str], position: dict[str, int]) -> Sequence[str]:
    """The shards of a run: its partition, or its range of shards (a backfill's batch), in
    the order they were registered (``position``: each registered shard's index)."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    start, end = position.get(run.tags[_RANGE_START]), position.get(run.tags[_RANGE_END])
    if start is None or end is None:  # a shard deleted since: the range can no longer be told
        return []
    return registered[start : end + 1]


def _ingests_a_shard(run: dg.DagsterRun) -> bool:
    if not (run.tags.get("dagster/partition") or run.tags.get(_RANGE_START)):
        return False
    selected = {key.to_user_string() for key in run.asset_selection or ()}
    return run.job_name == web_ingest.name or bool(selected & set(INGEST_ASSETS))  # backfill runs are asset runs


def _backfill_shards(backfill: PartitionBackfill) -> set[str]:
    if backfill.is_asset_backfill:  # the automation's, or one started in the UI
        # Only a backfill an older Dagster stored has its data serialized instead.
        assert backfill.asset_backfill_data is not None, f"backfill {backfill.backfill_id}: asset backfill data in an older Dagster's format"
        shards = backfill.asset_backfill_data.target_subset.partitions_subsets_by_asset_key.get(dg.AssetKey("web_documents"))
        return set(shards.get_partition_keys()) if shards is not None else set()
    return set(backfill.partition_names or ()) if backfill.job_name == web_ingest.name else set()  # `dagster job backfill`


def build_inbox_automation(config: AsagiConfig) -> tuple[dg.SensorDefinition, dg.ScheduleDefinition]:
    web = config.sources.web

    @dg.sensor(
        asset_selection=web_ingest.selection,  # a sensor may ask for a backfill only of an asset selection
        minimum_interval_seconds=web.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new WARC files in the inbox as shards and ingests them in one backfill.",
    )
    def warc_inbox_sensor(context: dg.SensorEvaluationContext, profile: ProfileResource, storage: StorageResource):
        held = cli_holding(context.instance)
        if held:  # it registers and ingests what it wrote itself
            return dg.SkipReason(f"{held}; the inbox waits for it to end")
        plan = _plan(profile, storage, context.instance.get_dynamic_partitions(WARC_SHARDS), full=False, after=context.cursor or "")
        for skipped in plan.skipped:
            context.log.warning(f"inbox file skipped: {skipped}")
        if not plan.new:
            context.update_cursor(plan.resume_after)  # the next tick lists the next window ("": from the start)
            return dg.SkipReason(f"no new shards in the inbox{_window_note(plan.resume_after)}")
        keys = register_new(context.instance, storage.storage, plan.new, profile.settings.sources.web.files_per_partition)
        files = f"{len(plan.new)} new files as " if len(keys) < len(plan.new) else ""
        context.log.info(f"registered {files}{len(keys)} new shards{_window_note(plan.resume_after)}: {_sample(keys)}")
        return dg.SensorResult(run_requests=[_ingest_backfill_request(keys, "warc_inbox_sensor")], cursor=plan.resume_after)

    @dg.schedule(
        job=web_ingest,
        cron_schedule=web.resync_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-sync of the registered shards: those whose file changed and those never ingested, in one backfill.",
    )
    def warc_inbox_resync(context: dg.ScheduleEvaluationContext, profile: ProfileResource, storage: StorageResource):
        held = cli_holding(context.instance)
        if held:
            return dg.SkipReason(f"{held}; the re-sync waits for the next tick")
        partitions = context.instance.get_dynamic_partitions(WARC_SHARDS)
        plan = _plan(profile, storage, partitions, full=True, after=_resync_after(context.instance))
        context.instance.run_storage.set_cursor_values({RESYNC_CURSOR_KEY: plan.resume_after})
        for skipped in plan.skipped:
            context.log.warning(f"inbox file skipped: {skipped}")
        # New files are the sensor's: were both to take a file the sensor is about to, two
        # runs of one shard would overlap. A shard the sensor registered but never got to
        # ask for (a tick that failed in between) is registered and never ingested: here.
        if plan.new:
            context.log.info(f"{len(plan.new)} new files wait for warc_inbox_sensor: {_sample([s.key for s in plan.new])}")
        busy = _shards_in_flight(context)  # queued, running or in a backfill: not out of sync, just not done
        keys = sorted(set(batch_keys_of(storage.storage, partitions, [s.key for s in plan.changed]).values()) - busy)
        if not keys:
            return dg.SkipReason(f"inbox in sync, or its out-of-sync shards are already running{_window_note(plan.resume_after)}")
        backfill_id = submit_ingest_backfill(context.instance, keys, "warc_inbox_resync")
        return dg.SkipReason(f"no runs of its own: backfill {backfill_id} re-syncs {len(keys)} shards: {_sample(keys)}")

    return warc_inbox_sensor, warc_inbox_resync


def _window_note(resume_after: str) -> str:
    return f" (in the inbox's files up to {resume_after}; the next tick goes on from there)" if resume_after else ""


def _sample(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The web group: the per-shard ingest assets (batched per ``sources.web.shards_per_run``),
    ``web_ingest``, and the inbox sensor and re-sync schedule."""
    batches = shard_batches(config.sources.web.shards_per_run)
    sensor, schedule = build_inbox_automation(config)
    return dg.Definitions(
        assets=[asset.with_attributes(backfill_policy=batches) for asset in (warc_records, page_structure, pair_images)],
        jobs=[web_ingest],
        sensors=[sensor],
        schedules=[schedule],
    )
