"""The Dagster pools that keep steps from running side by side where they must not: the
pair_images steps download in one pool whose limit must not exceed the downloaders the
profile shares each host's budget among; updates of the hash index run in a pool of one."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_sample
from assets.filters import INDEX_POOL
from assets.pools import pool_limit
from assets.web import IMAGE_DOWNLOADS_POOL

SHARD = "sample-00001.warc.gz"


def test_pool_limit_reads_the_pools_own_limit_else_the_default():
    with dg.instance_for_test() as instance:
        assert pool_limit(instance, IMAGE_DOWNLOADS_POOL) is None  # unlimited
        instance.event_log_storage.set_concurrency_slots(IMAGE_DOWNLOADS_POOL, 3)
        assert pool_limit(instance, IMAGE_DOWNLOADS_POOL) == 3
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 2}}}) as instance:
        assert pool_limit(instance, IMAGE_DOWNLOADS_POOL) == 2


def test_a_pool_wider_than_the_shared_out_budgets_stops_the_download(profile_path, config, served_dir, image_server):
    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    job = build_definitions(str(profile_path)).resolve_job_def("web_ingest")
    assert config.sources.web.downloader.downloaders == 1
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", [SHARD])
        instance.event_log_storage.set_concurrency_slots(IMAGE_DOWNLOADS_POOL, 4)
        result = job.execute_in_process(instance=instance, partition_key=SHARD, raise_on_error=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert failure.step_key == "pair_images"
        assert "lets 4 steps download at once" in failure.step_failure_data.error.cause.message
        # Set to the profile's downloaders, the same run goes through.
        instance.event_log_storage.set_concurrency_slots(IMAGE_DOWNLOADS_POOL, 1)
        assert job.execute_in_process(instance=instance, partition_key=SHARD).success


def test_the_hash_index_refuses_a_pool_that_lets_two_updates_run_at_once(profile_path):
    job = build_definitions(str(profile_path)).resolve_job_def("filter_indexes")
    index = [dg.AssetKey("image_hash_index")]
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(INDEX_POOL, 2)
        result = job.execute_in_process(instance=instance, asset_selection=index, raise_on_error=False)
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert "lets 2 index updates run at once" in failure.step_failure_data.error.cause.message
        instance.event_log_storage.set_concurrency_slots(INDEX_POOL, 1)
        assert job.execute_in_process(instance=instance, asset_selection=index).success
