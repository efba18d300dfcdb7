"""Many shards per run (issue 18 §1): a run over a range of shards gives each shard what a
run of its own gives it, files, manifest and a materialization with its own metadata;
its checks name the shards that failed; the re-sync counts every shard of a range run
that is still in flight as busy."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.utils import make_new_run_id

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_filter_sample, write_sample
from assets.shards import shard_check
from assets.web import INGEST_ASSETS
from tests.conftest import resync_tick, write_profile

SHARDS = ["sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc"]
RANGE = {"dagster/asset_partition_range_start": SHARDS[0], "dagster/asset_partition_range_end": SHARDS[-1]}
PER_SHARD = (*INGEST_ASSETS, "filtered_pairs", "reference_texts")
MANIFEST_FIELDS = ("rows_in", "rows_out", "rows_rejected", "rejected_by_reason", "rule_stats")


def _pipeline(directory: Path, served_dir, image_server, files_per_partition: int = 1):
    directory.mkdir()
    profile = write_profile(
        directory,
        filters={"decontamination": {"benchmarks": {"ja-vlm-bench-in-the-wild": {"images": str(directory / "itw")}}}},
        sources={"web": {"files_per_partition": files_per_partition}},
    )
    config = load_config(profile)
    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    write_filter_sample(config.filters)
    return build_definitions(str(profile)), Path(config.storage.root)


def _manifest(root: Path, asset: str, shard: str) -> dict:
    full = json.loads((root / asset / shard / "_manifest.json").read_text())
    return {field: full[field] for field in MANIFEST_FIELDS}


def test_a_run_over_a_range_of_shards_gives_each_shard_what_a_run_of_its_own_gives(tmp_path, served_dir, image_server):
    batched_defs, batched_root = _pipeline(tmp_path / "batched", served_dir, image_server)
    single_defs, single_root = _pipeline(tmp_path / "single", served_dir, image_server)
    with dg.DagsterInstance.ephemeral() as batched, dg.DagsterInstance.ephemeral() as single:
        for instance in (batched, single):
            instance.add_dynamic_partitions("warc_shards", SHARDS)
        ingest = batched_defs.resolve_job_def("web_ingest").execute_in_process(instance=batched, tags=RANGE)
        assert ingest.success
        assert batched_defs.resolve_job_def("filter_indexes").execute_in_process(instance=batched).success
        filtered = batched_defs.resolve_job_def("filtered_splits").execute_in_process(instance=batched, tags=RANGE)
        assert filtered.success
        for shard in SHARDS:
            assert single_defs.resolve_job_def("web_ingest").execute_in_process(instance=single, partition_key=shard).success
        assert single_defs.resolve_job_def("filter_indexes").execute_in_process(instance=single).success
        for shard in SHARDS:
            assert single_defs.resolve_job_def("filtered_splits").execute_in_process(instance=single, partition_key=shard).success

        assert len(batched.get_runs()) == 3 and len(single.get_runs()) == 7  # ingest, indexes, filter: one run each for all shards
        for asset in PER_SHARD:
            records = batched.fetch_materializations(dg.AssetKey(asset), limit=10).records
            by_shard = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
            assert sorted(by_shard) == SHARDS, asset  # one materialization per shard
            for shard in SHARDS:
                mine = _manifest(batched_root, asset, shard)
                assert mine == _manifest(single_root, asset, shard), (asset, shard)  # as if the shard had a run of its own
                assert by_shard[shard]["rows_out"].value == mine["rows_out"] and by_shard[shard]["rows_accounted"].value is True
        assert len({_manifest(batched_root, "web_documents", s)["rows_in"] for s in SHARDS}) > 1  # the shards differ: a real comparison

        checks = {(c.asset_key.to_user_string(), c.check_name): c for c in [*ingest.get_asset_check_evaluations(), *filtered.get_asset_check_evaluations()]}
        assert all(c.passed and c.metadata["shards"].value == 3 for c in checks.values()), checks
        rows = sum(_manifest(batched_root, "web_documents", s)["rows_in"] for s in SHARDS)
        assert checks[("web_documents", "rows_accounted")].metadata["rows_in"].value == rows  # totals over the run's shards


def test_a_range_runs_check_fails_when_one_shard_fails_and_names_it():
    results = {
        "a.warc": {"passed": True, "rows_in": 10, "rows_out": 7, "rows_rejected": 3},
        "b.warc": {"passed": False, "rows_in": 5, "rows_out": 2, "rows_rejected": 2},
        "c.warc": {"passed": True, "rows_in": 1, "rows_out": 1, "rows_rejected": 0},
    }
    check = shard_check("pair_images", "rows_accounted", results, totals=("rows_in", "rows_out", "rows_rejected"))
    assert not check.passed
    metadata = {key: value.value for key, value in check.metadata.items()}
    assert metadata["shards"] == 3 and metadata["shards_failed"] == 1
    assert (metadata["rows_in"], metadata["rows_out"], metadata["rows_rejected"]) == (16, 10, 5)
    assert metadata["failed"] == {"b.warc": {"rows_in": 5, "rows_out": 2, "rows_rejected": 2}}
    assert shard_check("pair_images", "rows_accounted", {k: results[k] for k in ("a.warc", "c.warc")}).passed


def test_the_resync_leaves_every_shard_of_a_range_run_in_flight_alone(tmp_path, served_dir, image_server):
    defs, _ = _pipeline(tmp_path / "p", served_dir, image_server)
    with dg.instance_for_test() as instance:  # the schedule's context needs an instance on disk
        instance.add_dynamic_partitions("warc_shards", SHARDS)
        when = iter(datetime(2026, 12, 1, hour, tzinfo=timezone.utc) for hour in range(24))
        tags = {"dagster/asset_partition_range_start": SHARDS[0], "dagster/asset_partition_range_end": SHARDS[1]}
        run = dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=make_new_run_id(),
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags=tags,
            asset_selection=frozenset(dg.AssetKey(a) for a in INGEST_ASSETS),
        )
        instance.run_storage.add_run(run)
        assert resync_tick(defs, instance, next(when)) == SHARDS[2:]  # never ingested; the first two wait in one run
        instance.report_run_canceled(run)
        assert resync_tick(defs, instance, next(when)) == SHARDS  # the run ended without them


def test_a_shard_that_fails_in_a_batch_leaves_the_shards_before_it_committed_whole(tmp_path, served_dir, image_server):
    """Shard 3 of a filter batch cannot be filtered (the index lost its rows file): the run
    fails, and shards 1 and 2, whose files were already written, have the manifests of
    those files, not their old ones."""
    from asagi_dagster.filters.hash_index import shard_key, shard_rows_path
    from asagi_dagster.storage import Storage

    defs, root = _pipeline(tmp_path / "p", served_dir, image_server)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("warc_shards", SHARDS)
        assert defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, tags=RANGE).success
        assert defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance).success
        storage = Storage(load_config(root.parent / "profile.yaml").storage)
        Path(shard_rows_path(storage, shard_key("screened_pairs", SHARDS[2]))).unlink()
        failed = defs.resolve_job_def("filtered_splits").execute_in_process(instance=instance, tags=RANGE, raise_on_error=False)
        assert not failed.success
        assert "does not cover screened_pairs" in failed.get_step_failure_events()[0].event_specific_data.error.to_string()
        for shard in SHARDS[:2]:
            manifest = storage.read_manifest("filtered_pairs", shard)
            assert pq.read_metadata(storage.strip_protocol(manifest.data_url)).num_rows == manifest.rows_out
            assert manifest.rows_in == _manifest(root, "screened_pairs", shard)["rows_out"]
        assert not storage.exists(storage.manifest_path("filtered_pairs", SHARDS[2]))
