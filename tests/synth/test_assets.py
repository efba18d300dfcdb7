"""The corpus assets through Dagster: the licence gate refuses before anything starts, and
a partition runs as a Pipes subprocess whose manifest becomes the asset's output."""

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.storage import Storage
from asagi_dagster.synth.generate import LicenceRefused
from tests.conftest import write_profile
from tests.synth.helpers import GENERATORS, failures, materialize, synthesis_section, write_caption_inputs


def test_licence_gate_refuses_a_restricted_generator_before_anything_runs(tmp_path):
    section = synthesis_section()
    section["generators"]["japanese_llm"] = {
        **GENERATORS["japanese_llm"],
        "licence": "proprietary API terms (no training of competing models)",
        "outputs_trainable": False,
    }
    profile = write_profile(tmp_path, synthesis=section)
    storage = Storage(load_config(profile).storage)
    write_caption_inputs(storage, "s1", pairs=2)
    with dg.instance_for_test() as instance:
        result, logs = materialize(profile, "ja_captions", "s1", instance)
        assert not result.success
        failed = result.get_step_failure_events()
        assert len(failed) == 1  # not retried: the same profile would be refused again
        message = failed[0].event_specific_data.error.message
        assert "japanese_llm" in message and "does not allow training" in message
        # Nothing started: no Pipes session, no work folder, no output.
        assert not [m for m in logs if "pipes" in m.lower()]
        assert not storage.exists(storage.path("_work", "ja_captions"))
        assert not storage.exists(storage.manifest_path("ja_captions", "s1"))


def test_a_partition_runs_as_a_pipes_subprocess_and_its_manifest_is_the_output(tmp_path):
    profile = write_profile(tmp_path, synthesis=synthesis_section(chunk_rows=2, max_tokens=24))
    storage = Storage(load_config(profile).storage)
    write_caption_inputs(storage, "s1", pairs=3)
    with dg.instance_for_test() as instance:
        result, logs = materialize(profile, "ja_captions", "s1", instance)
        assert result.success, failures(result)
        assert any("chunk 2:" in m for m in logs)  # the subprocess's log lines came back through Pipes
        manifest = storage.read_manifest("ja_captions", "s1")
        assert manifest.rows_in == 6 and manifest.rows_out + manifest.rows_rejected == 6
        checks = result.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]
        materialization = result.asset_materializations_for_node("ja_captions")[0]
        assert materialization.metadata["rows_in"].value == 6
        # The tiny random model's text rarely passes validation: accepted rows and their
        # provenance are tested with scripted answers (test_scripted.py).
        rejected = pq.read_table(storage.strip_protocol(manifest.rejections_url)).to_pylist()
        assert len(rejected) == manifest.rows_rejected and all(r["reason"] for r in rejected)


def test_licence_gate_looks_only_at_the_tasks_that_will_run(tmp_path):
    from asagi_dagster.synth.generate import licence_gate

    section = synthesis_section()
    section["generators"]["restricted"] = {**GENERATORS["japanese_llm"], "licence": "no training on outputs", "outputs_trainable": False}
    section["tasks"]["ja_caption_short"].update(generator="restricted", enabled=False)
    config = load_config(write_profile(tmp_path, synthesis=section))
    licence_gate(config.synthesis, "ja_captions")  # the short captions are off: nothing restricted runs
    section["tasks"]["ja_caption_short"]["enabled"] = True
    with pytest.raises(LicenceRefused, match="restricted"):
        licence_gate(load_config(write_profile(tmp_path, synthesis=section)).synthesis, "ja_captions")


def test_a_run_over_several_shards_is_one_program_that_loads_each_model_once(tmp_path):
    """A backfill's batch: one GPU program for every shard of the run, each model loaded
    once, and each shard its own manifest and materialization with its own counts."""
    profile = write_profile(tmp_path, synthesis=synthesis_section(chunk_rows=2, max_tokens=16))
    storage = Storage(load_config(profile).storage)
    shards = {"s1": 2, "s2": 3}  # pairs per shard: each makes a long and a short caption
    for shard, pairs in shards.items():
        write_caption_inputs(storage, shard, pairs=pairs)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", list(shards))
        job = build_definitions(str(profile)).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("ja_captions")],
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": "s1", "dagster/asset_partition_range_end": "s2"},
        )
        assert result.success, failures(result)
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert len([m for m in logs if "loading generator japanese_llm" in m]) == 1  # once for both shards
        assert len([m for m in logs if "Started execution of step" in m]) == 1
        materializations = {m.partition: m.metadata for m in result.asset_materializations_for_node("ja_captions")}
        assert sorted(materializations) == ["s1", "s2"]
        for shard, pairs in shards.items():
            manifest = storage.read_manifest("ja_captions", shard)
            assert manifest.rows_in == 2 * pairs and manifest.rows_out + manifest.rows_rejected == 2 * pairs
            assert materializations[shard]["rows_in"].value == 2 * pairs
        [check] = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["shards"].value == 2 and check.metadata["rows_in"].value == 10
