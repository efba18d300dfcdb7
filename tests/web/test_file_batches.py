"""Partitions that are batches of inbox files (D111, issue 22 §1): the sensor registers
new files as batches of sources.web.files_per_partition, each file of a batch gets what
a partition of its own gives it (files, manifest, catalog entry), the batch's
materialization sums its files, and the re-sync and the re-filter sensor ask for the
batch that holds a changed file."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from asagi_dagster import catalog
from asagi_dagster.storage import Storage, StorageSettings
from asagi_dagster.web.batches import batch_path, commit_batches, make_batches
from asagi_dagster.web.inbox import ShardFile
from assets.filters import as_partitions
from assets.web import INGEST_ASSETS
from tests.conftest import resync_tick
from tests.web.test_shard_batches import PER_SHARD, SHARDS, _manifest, _pipeline

BATCHES = ["sample-00000.warc.gz", "sample-00002.warc"]  # two files, then one: keyed by their first


def _register(defs, instance) -> list[str]:
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = defs.resolve_sensor_def("warc_inbox_sensor")(context)
    [request] = result.run_requests
    return sorted(request.asset_graph_subset.partitions_subsets_by_asset_key[dg.AssetKey("web_documents")].get_partition_keys())


def test_files_in_batches_get_what_a_partition_of_their_own_gives(tmp_path, served_dir, image_server):
    batched_defs, batched_root = _pipeline(tmp_path / "batched", served_dir, image_server, files_per_partition=2)
    single_defs, single_root = _pipeline(tmp_path / "single", served_dir, image_server)
    with dg.instance_for_test() as batched, dg.DagsterInstance.ephemeral() as single:
        assert _register(batched_defs, batched) == BATCHES
        assert batched.get_dynamic_partitions("warc_shards") == BATCHES
        listed = json.loads((batched_root / "_batches" / "_" / f"{BATCHES[0]}.json").read_text())
        assert [f["key"] for f in listed["files"]] == SHARDS[:2]
        assert not (batched_root / "_batches" / "_" / f"{BATCHES[1]}.json").exists()  # a batch of one needs no list
        assert _register(single_defs, single) == SHARDS

        for defs, instance, partitions in ((batched_defs, batched, BATCHES), (single_defs, single, SHARDS)):
            for partition in partitions:
                assert defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key=partition).success
            assert defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance).success
            for partition in partitions:
                assert defs.resolve_job_def("filtered_splits").execute_in_process(instance=instance, partition_key=partition).success

        for asset in PER_SHARD:
            for shard in SHARDS:  # every file its own folder and manifest, as if it had a partition of its own
                assert _manifest(batched_root, asset, shard) == _manifest(single_root, asset, shard), (asset, shard)
            records = batched.fetch_materializations(dg.AssetKey(asset), limit=10).records
            by_partition = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
            assert sorted(by_partition) == BATCHES, asset
            pair = [_manifest(batched_root, asset, shard) for shard in SHARDS[:2]]
            assert by_partition[BATCHES[0]]["files"].value == 2
            assert by_partition[BATCHES[0]]["rows_out"].value == sum(m["rows_out"] for m in pair), asset
            assert by_partition[BATCHES[0]]["rows_out_by_file"].value == {s: m["rows_out"] for s, m in zip(SHARDS, pair, strict=False)}
            assert by_partition[BATCHES[0]]["rows_accounted"].value is True
            assert by_partition[BATCHES[1]]["rows_out"].value == _manifest(batched_root, asset, SHARDS[2])["rows_out"]
            assert "files" not in by_partition[BATCHES[1]]  # a partition of one file shows that file's own metadata
        assert len({_manifest(batched_root, "web_documents", s)["rows_in"] for s in SHARDS}) > 1  # the files differ: a real comparison

        # The second file of the batch changes: the re-sync asks for its batch, not for the file.
        inbox = tmp_path / "batched" / "inbox"
        os.utime(inbox / SHARDS[1], (1, 1))
        assert resync_tick(batched_defs, batched, datetime.now(timezone.utc)) == [BATCHES[0]]


def test_a_new_file_makes_a_new_batch_and_a_changed_file_is_refiltered_by_its_batch(tmp_path, served_dir, image_server):
    defs, root = _pipeline(tmp_path / "batched", served_dir, image_server, files_per_partition=2)
    with dg.DagsterInstance.ephemeral() as instance:
        assert _register(defs, instance) == BATCHES
        inbox = tmp_path / "batched" / "inbox"
        (inbox / "sample-00001b.warc").write_bytes((inbox / SHARDS[2]).read_bytes())  # sorts inside the first batch
        assert _register(defs, instance) == ["sample-00001b.warc"]  # registered batches never change
        storage = Storage(StorageSettings(root=str(root)))
        keys = set(instance.get_dynamic_partitions("warc_shards"))
        changed = [f"screened_pairs/{SHARDS[1]}", "screened_pairs/sample-00001b.warc", "screened_pairs/gone.warc", "screened_dataset_pairs/x"]
        assert as_partitions(storage, changed, keys) == [
            "screened_dataset_pairs/x",
            f"screened_pairs/{BATCHES[0]}",
            "screened_pairs/sample-00001b.warc",
        ]


def test_a_list_whose_partition_was_never_added_is_registered_again(tmp_path, served_dir, image_server):
    """A crash between committing a batch's list and adding its key: the next tick batches
    the files again and adds the key."""
    defs, root = _pipeline(tmp_path / "batched", served_dir, image_server, files_per_partition=2)
    storage = Storage(StorageSettings(root=str(root)))
    inbox = tmp_path / "batched" / "inbox"
    commit_batches(storage, make_batches([ShardFile(s, str(inbox / s), "") for s in SHARDS], 2))
    assert Path(batch_path(storage, BATCHES[0])).exists()
    with dg.DagsterInstance.ephemeral() as instance:
        assert _register(defs, instance) == BATCHES
        assert instance.get_dynamic_partitions("warc_shards") == BATCHES


def _web_ingest():
    """web_ingest for the profile in ASAGI_CONFIG, reconstructable (a re-execution needs it)."""
    from asagi_dagster.definitions import build_definitions

    return build_definitions(os.environ["ASAGI_CONFIG"]).resolve_job_def("web_ingest")


def test_a_retry_of_a_batch_skips_the_files_an_earlier_attempt_committed(tmp_path, served_dir, image_server, monkeypatch):
    """The step fails on the batch's second file (a file where its output folder should
    be); re-executed from failure, it skips the first file, committed by the first
    attempt, and does the other two."""
    defs, root = _pipeline(tmp_path / "batched", served_dir, image_server, files_per_partition=3)
    monkeypatch.setenv("ASAGI_CONFIG", str(tmp_path / "batched" / "profile.yaml"))
    job = dg.reconstructable(_web_ingest)
    with dg.instance_for_test() as instance:
        [batch] = _register(defs, instance)
        assert batch == SHARDS[0]
        storage = Storage(StorageSettings(root=str(root)))
        catalog.ensure_built(storage)  # as the re-sync's first read does: the catalog is then read as it is
        obstacle = root / "web_documents" / SHARDS[1]
        obstacle.parent.mkdir(parents=True)
        obstacle.write_text("not a folder")
        with dg.execute_job(job, instance, tags={"dagster/partition": batch}) as first:
            assert not first.success
            first_id = first.run_id
            first_logs = [e.message for e in instance.all_logs(first_id) if e.message]
        assert f"stopped in file 2/3: {SHARDS[1]}" in first_logs  # the file the step failed on, named
        assert f"file 1/3: {SHARDS[0]}" in first_logs  # progress: the first file, then at most every 30 s
        assert not any(m.startswith("file 2/3") for m in first_logs)
        first_manifest = root / "web_documents" / SHARDS[0] / "_manifest.json"
        first_commit = (first_manifest.read_text(), first_manifest.stat().st_mtime_ns)
        assert json.loads(first_commit[0])["source"]["root_run"] == first_id
        assert not (root / "web_documents" / SHARDS[2]).exists()  # the step stopped at the second file
        # The failed step recorded nothing in the catalog (its entries go in as it ends), so
        # the catalog shows no file of the batch ingested, and the re-sync would ask for it.
        assert catalog.latest_manifests(storage, ["web_documents"]) == {}

        obstacle.unlink()
        again = dg.ReexecutionOptions.from_failure(first_id, instance)
        with dg.execute_job(job, instance, tags={"dagster/partition": batch}, reexecution_options=again) as retried:
            assert retried.success
            logs = [e.message for e in instance.all_logs(retried.run_id) if e.message]
        assert any(f"{SHARDS[0]} committed by an earlier attempt of this run, skipped" in m for m in logs)
        assert (first_manifest.read_text(), first_manifest.stat().st_mtime_ns) == first_commit  # not written again
        for shard in SHARDS:
            for asset in INGEST_ASSETS:
                assert json.loads((root / asset / shard / "_manifest.json").read_text())["source"]["root_run"] == first_id, (asset, shard)
        recorded = catalog.latest_manifests(storage, INGEST_ASSETS)  # the retry recorded every file, the skipped one too
        assert sorted(recorded) == sorted((asset, shard) for asset in INGEST_ASSETS for shard in SHARDS)
        assert recorded["web_documents", SHARDS[0]].source["root_run"] == first_id
        [record] = instance.fetch_materializations(dg.AssetKey("web_documents"), limit=1).records
        metadata = record.asset_materialization.metadata
        assert metadata["files"].value == 3  # the retry's materialization covers the skipped file too
        assert metadata["rows_out"].value == sum(_manifest(root, "web_documents", s)["rows_out"] for s in SHARDS)


def test_a_file_gone_from_the_inbox_is_a_rejection_and_the_rest_of_its_batch_is_ingested(tmp_path, served_dir, image_server):
    """A registered file deleted before its batch runs: the step does not fail on it (it
    would on every retry, and the files after it would never be ingested); it is recorded
    as missing, and when it comes back the re-sync asks for its batch."""
    defs, root = _pipeline(tmp_path / "batched", served_dir, image_server, files_per_partition=3)
    inbox = tmp_path / "batched" / "inbox"
    with dg.instance_for_test() as instance:
        [batch] = _register(defs, instance)
        kept = (inbox / SHARDS[1]).read_bytes()
        (inbox / SHARDS[1]).unlink()
        result = defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key=batch)
        assert result.success
        missing = json.loads((root / "web_documents" / SHARDS[1] / "_manifest.json").read_text())
        assert (missing["rows_in"], missing["rows_out"], missing["rejected_by_reason"]) == (1, 0, {"missing_warc_file": 1})
        assert missing["source"]["fingerprint"] == ""
        for shard in (SHARDS[0], SHARDS[2]):  # the files around it, ingested as usual
            assert _manifest(root, "screened_pairs", shard)["rows_out"] > 0, shard
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} >= {"record_starts_accounted", "rows_accounted"} and all(c.passed for c in checks)
        assert resync_tick(defs, instance, datetime.now(timezone.utc)) == []  # gone: nothing to do

        (inbox / SHARDS[1]).write_bytes(kept)
        assert resync_tick(defs, instance, datetime.now(timezone.utc)) == [batch]
