"""The incremental hash index wired into Dagster (issue 18 §3): each image_hash_index run
adds the shards screened since the last one, refilter_sensor asks for one backfill of
exactly the partitions the index reports, and the filtered splits do not depend on the
order shards arrived in."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.filters.hash_index import IndexDoesNotCoverPartition, SyncPlan, SyncResult, changed_since, write_changes
from asagi_dagster.storage import Storage, StorageSettings
from asagi_sample.site import write_filter_sample, write_sample
from assets.filters import refilter_subset
from tests.conftest import write_profile

SHARDS = ["sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc"]
INDEX = dg.AssetKey("image_hash_index")


class Pipeline:
    """One storage root and instance, driven the way the daemon drives it: ingest a shard,
    materialize the index, tick refilter_sensor, run the backfill it asks for."""

    def __init__(self, directory: Path, served_dir, image_server, instance: dg.DagsterInstance):
        directory.mkdir(parents=True, exist_ok=True)
        benchmarks = {"ja-vlm-bench-in-the-wild": {"images": str(directory / "bench" / "itw")}}
        profile = write_profile(directory, filters={"decontamination": {"benchmarks": benchmarks}})
        config = load_config(profile)
        write_sample(Path(config.sources.web.inbox), served_dir, image_server)
        write_filter_sample(config.filters)
        self.root = Path(config.storage.root)
        self.defs = build_definitions(str(profile))
        self.instance = instance
        self.cursor = None
        self.filter_runs: list[str] = []  # every shard filtered, in order
        self.refiltered_per_add: dict[str, list[str]] = {}
        instance.add_dynamic_partitions("warc_shards", SHARDS)

    def ingest(self, shard: str) -> None:
        assert self.defs.resolve_job_def("web_ingest").execute_in_process(instance=self.instance, partition_key=shard).success

    def index(self) -> dict:
        """Materialize the indexes; the index's metadata."""
        result = self.defs.resolve_job_def("filter_indexes").execute_in_process(instance=self.instance)
        assert all(check.passed for check in result.get_asset_check_evaluations())
        [materialization] = [m for m in result.asset_materializations_for_node("image_hash_index") if m.asset_key == INDEX]
        return {key: value.value for key, value in materialization.metadata.items()}

    def tick(self) -> list[dg.RunRequest]:
        sensor = self.defs.resolve_sensor_def("refilter_sensor")
        with dg.build_sensor_context(instance=self.instance, resources=self.defs.resources, cursor=self.cursor) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult):
            self.cursor = result.cursor or self.cursor
            return list(result.run_requests or [])
        return []

    def run_backfill(self, request: dg.RunRequest) -> list[str]:
        """What the backfill daemon does with the request: a run per shard. Returns the shards."""
        subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
        shards = sorted(subsets[dg.AssetKey("filtered_pairs")].get_partition_keys())
        assert sorted(subsets[dg.AssetKey("reference_texts")].get_partition_keys()) == shards
        for shard in shards:
            assert self.defs.resolve_job_def("filtered_splits").execute_in_process(instance=self.instance, partition_key=shard).success
        self.filter_runs += shards
        return shards

    def add_and_refilter(self, shard: str) -> tuple[dict, list[str]]:
        """Ingest a shard, index it, re-filter what the sensor asks for: (index metadata, shards re-filtered)."""
        self.ingest(shard)
        metadata = self.index()
        [request] = self.tick()
        assert request.tags["asagi/requested_by"] == "refilter_sensor"
        return metadata, self.run_backfill(request)

    def filtered_splits(self) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
        """Per shard: the kept pair ids and the (pair id, reason) of every pair filtered out."""
        splits = {}
        for shard in SHARDS:
            kept = pq.read_table(self.root / "filtered_pairs" / shard / "data.parquet", columns=["pair_id"]).column("pair_id").to_pylist()
            rejected = pq.read_table(self.root / "rejections" / "filtered_pairs" / shard / "data.parquet", columns=["record_id", "reason"]).to_pylist()
            splits[shard] = (sorted(kept), sorted((r["record_id"], r["reason"]) for r in rejected))
        return splits


def _changes_file_refilter(metadata: dict) -> list[str]:
    return json.loads(Path(metadata["changes"]).read_text())["refilter"]


def _run(directory: Path, served_dir, image_server, order: list[str]) -> Pipeline:
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(directory, served_dir, image_server, instance)
        for shard in order:
            metadata, refiltered = pipeline.add_and_refilter(shard)
            expected = sorted(f"screened_pairs/{s}" for s in refiltered)
            # The backfill targets exactly what the index reported, the new shard among them.
            assert _changes_file_refilter(metadata) == expected
            assert metadata["refilter_count"] == len(expected) and metadata["partitions_added"] == 1
            assert shard in refiltered
            pipeline.refiltered_per_add[shard] = refiltered
        # Nothing indexed since: no further backfill.
        assert pipeline.tick() == []
        return pipeline


def test_two_arrival_orders_give_identical_filtered_splits(tmp_path, served_dir, image_server):
    forward = _run(tmp_path / "forward", served_dir, image_server, SHARDS)
    backward = _run(tmp_path / "backward", served_dir, image_server, SHARDS[::-1])
    splits = forward.filtered_splits()
    assert splits == backward.filtered_splits()
    # The same split as the whole-index rebuild gave (test_filter_assets).
    reasons = Counter(reason for _, rejected in splits.values() for _, reason in rejected)
    assert reasons == {"benchmark_overlap": 1, "near_duplicate_image": 1, "duplicate_image": 1, "duplicate_pair": 1, "document_image": 1}
    # Re-filtering follows the index's reports, not "every shard on every index change"
    # (1 + 2 + 3 runs), and the sample has an add that changes an earlier shard's decisions,
    # so the identical splits rest on re-filtering it.
    for pipeline in (forward, backward):
        assert len(pipeline.filter_runs) < len(SHARDS) * (len(SHARDS) + 1) // 2
    assert any(set(refiltered) - {shard} for pipeline in (forward, backward) for shard, refiltered in pipeline.refiltered_per_add.items())


def test_a_shard_the_index_does_not_cover_yet_is_a_clear_error(tmp_path, served_dir, image_server):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(tmp_path, served_dir, image_server, instance)
        pipeline.ingest(SHARDS[0])
        pipeline.index()
        pipeline.ingest(SHARDS[1])  # screened, not indexed yet
        with pytest.raises(IndexDoesNotCoverPartition, match=f"does not cover screened_pairs {SHARDS[1]} yet"):
            pipeline.defs.resolve_job_def("filtered_splits").execute_in_process(instance=instance, partition_key=SHARDS[1])


def test_refilter_subset_maps_index_shards_to_the_filtered_assets_partitions():
    datasets = dg.StaticPartitionsDefinition(["coco-ja", "stair"])
    shards = ["screened_dataset_pairs/stair", "screened_dataset_pairs/dropped", "screened_pairs/a.warc.gz", "screened_pairs/unregistered.warc.gz"]
    subset = refilter_subset(shards, {"a.warc.gz", "b.warc.gz"}, datasets)
    keys = {key.to_user_string(): sorted(s.get_partition_keys()) for key, s in subset.partitions_subsets_by_asset_key.items()}
    assert keys == {"filtered_pairs": ["a.warc.gz"], "reference_texts": ["a.warc.gz"], "filtered_dataset_pairs": ["stair"]}
    assert refilter_subset(["screened_pairs/unregistered.warc.gz"], {"a.warc.gz"}, datasets) is None


def test_the_sensor_reads_every_generation_since_its_cursor(tmp_path):
    """A generation without a changes file (a remove and an add in one sync) is skipped; an
    index begun again from nothing (generation below the cursor) is read from its start."""
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    for generation, shards in ((1, ["screened_pairs/a"]), (3, ["screened_pairs/b", "screened_dataset_pairs/d"])):
        write_changes(storage, SyncResult(SyncPlan(add=shards, replace=[], remove=[]), generation, shards))
    assert changed_since(storage, 0, 3) == ["screened_dataset_pairs/d", "screened_pairs/a", "screened_pairs/b"]
    assert changed_since(storage, 1, 3) == ["screened_dataset_pairs/d", "screened_pairs/b"]
    assert changed_since(storage, 3, 3) == []
    assert changed_since(storage, 7, 1) == ["screened_pairs/a"]
