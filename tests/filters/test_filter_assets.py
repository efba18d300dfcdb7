"""The filtering assets in Dagster on the whole sample: screened -> indexes -> filtered,
every asset check passing, the decontamination audit included."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_filter_sample, write_sample
from tests.conftest import write_profile

SHARDS = ["sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc"]


def test_sample_through_the_filters_with_every_check_passing(tmp_path, served_dir, image_server):
    benchmarks = {"ja-vlm-bench-in-the-wild": {"images": str(tmp_path / "bench" / "itw")}}
    profile = write_profile(tmp_path, filters={"decontamination": {"benchmarks": benchmarks}})
    config = load_config(profile)
    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    write_filter_sample(config.filters)
    defs = build_definitions(str(profile))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", SHARDS)
        for shard in SHARDS:
            assert defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key=shard).success
        indexes = defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance)
        assert all(c.passed for c in indexes.get_asset_check_evaluations())
        filtered = {}
        for shard in SHARDS:
            result = defs.resolve_job_def("filtered_splits").execute_in_process(instance=instance, partition_key=shard)
            checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()}
            assert checks == {
                ("filtered_pairs", "rows_accounted"): True,
                ("filtered_pairs", "no_benchmark_overlap"): True,
                ("reference_texts", "rows_accounted"): True,
            }
            filtered[shard] = result.asset_materializations_for_node("filtered_pairs")[0].metadata
        # Which copy of a duplicate is kept follows the origins' ids, which follow the
        # pages' bytes (they hold the image server's port): count over all shards.
        reasons = Counter()
        for meta in filtered.values():
            reasons.update(meta["rejected_by_reason"].value)
        assert reasons == {"benchmark_overlap": 1, "near_duplicate_image": 1, "duplicate_image": 1, "duplicate_pair": 1, "document_image": 1}
        assert "| benchmark_overlap | 5 | 1 | 80.0% |" in filtered["sample-00000.warc.gz"]["rule_pass_rates"].value
        references = instance.get_latest_materialization_event(dg.AssetKey("reference_texts")).asset_materialization.metadata
        assert references["scorer"].value.endswith("tiny-clip-ja-v1")
        screened = instance.get_latest_materialization_event(dg.AssetKey("screened_pairs")).asset_materialization.metadata
        assert "| monochrome |" in screened["rule_pass_rates"].value
