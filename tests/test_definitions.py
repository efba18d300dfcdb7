"""The Dagster layer: definitions, the inbox sensor and re-sync schedule, and a full
materialization of the sample with every asset check passing."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import dagster as dg
import pytest

from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_sample
from tests.conftest import backfill_shards, resync_tick

SHARD_INGEST = {"web_documents", "web_images", "image_text_pairs", "interleaved_documents", "pair_images", "screened_pairs"}
ASSETS = (
    SHARD_INGEST
    | {"image_hash_index", "benchmark_image_index", "document_image_reference", "filtered_pairs", "reference_texts"}
    | {"dataset_pairs", "screened_dataset_pairs", "filtered_dataset_pairs"}
    | {"english_captions", "ja_captions", "synthetic_vqa", "synthetic_mcvqa"}
    | {"stage1_mixture", "stage2_mixture"}
)
MODELS = {"vlm_stage1", "vlm_stage2"}  # a model folder, not rows: no row accounting


@pytest.fixture
def defs(profile_path):
    return build_definitions(str(profile_path))


@pytest.fixture
def sample_inbox(config, served_dir, image_server):
    from pathlib import Path

    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    return Path(config.sources.web.inbox)


def test_every_asset_has_description_group_and_accounting_check(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == ASSETS | MODELS
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and node.group_name in ("web", "filters", "datasets", "synthesis", "training")
        assert (dg.AssetCheckKey(key, "rows_accounted") in node.check_keys) == (key.to_user_string() not in MODELS)
    assert defs.resolve_job_def("web_ingest").partitions_def.name == "warc_shards"
    assert defs.resolve_sensor_def("warc_inbox_sensor")
    # Re-filtering after an index change is the refilter sensor's, not an automation condition's.
    assert defs.resolve_sensor_def("refilter_sensor").asset_selection.resolve(graph) == {
        dg.AssetKey(a) for a in ("filtered_pairs", "reference_texts", "filtered_dataset_pairs")
    }
    assert all(graph.get(dg.AssetKey(a)).automation_condition is None for a in ("filtered_pairs", "filtered_dataset_pairs"))
    assert defs.resolve_assets_def("image_hash_index").node_def.pool == "image_hash_index"  # adds never run at once
    assert defs.resolve_schedule_def("warc_inbox_resync").cron_schedule == "0 * * * *"


def test_library_never_imports_dagster():
    """GPU pods have only dagster-pipes: every library module but definitions.py must
    import with dagster unavailable (directly or through assets/ and resources/)."""
    import subprocess
    import sys
    from pathlib import Path

    library = Path(__file__).resolve().parent.parent / "asagi_dagster"
    modules = [
        "asagi_dagster." + ".".join(p.relative_to(library).with_suffix("").parts)
        for p in library.rglob("*.py")
        if p.name not in ("definitions.py", "__init__.py")
    ]
    script = (
        "import importlib, sys\n"
        "for name in ('dagster', 'dagster_k8s', 'assets', 'resources'): sys.modules[name] = None\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) > 10


def _sensor_result(defs, instance):
    sensor = defs.resolve_sensor_def("warc_inbox_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        return sensor(context)


def test_sensor_registers_new_shards_and_asks_for_one_backfill(defs, sample_inbox):
    with dg.instance_for_test() as instance:
        result = _sensor_result(defs, instance)
        keys = ["sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc"]
        [request] = result.run_requests
        assert request.requires_backfill_daemon() and backfill_shards(request.asset_graph_subset) == keys
        assert request.tags["asagi/requested_by"] == "warc_inbox_sensor"
        assert sorted(instance.get_dynamic_partitions("warc_shards")) == keys
        # Nothing new: the sensor skips.
        assert isinstance(_sensor_result(defs, instance), dg.SkipReason)
        (sample_inbox / "later").mkdir()
        (sample_inbox / "later" / "crawl-7.warc.gz").write_bytes((sample_inbox / "sample-00000.warc.gz").read_bytes())
        (sample_inbox / "bad name!.warc").write_bytes(b"")
        [request] = _sensor_result(defs, instance).run_requests
        assert backfill_shards(request.asset_graph_subset) == ["later__crawl-7.warc.gz"]


def test_schedule_resyncs_changed_and_never_ingested_shards(defs, sample_inbox):
    job = defs.resolve_job_def("web_ingest")
    ticks = iter(datetime(2026, 11, 1, hour, tzinfo=timezone.utc) for hour in range(24))
    with dg.instance_for_test() as instance:

        def tick(finish: bool = True) -> list[str]:
            return resync_tick(defs, instance, next(ticks), finish)

        # New files are the sensor's: the re-sync neither registers nor asks for them.
        assert tick() == [] and instance.get_dynamic_partitions("warc_shards") == []
        # Registered and never ingested (as when the sensor's tick failed after registering):
        first = ["sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc"]
        instance.add_dynamic_partitions("warc_shards", first)
        assert tick() == first
        for key in ("sample-00000.warc.gz", "sample-00001.warc.gz"):
            assert job.execute_in_process(instance=instance, partition_key=key).success
        # Only the shard never ingested is still out of sync...
        assert tick() == ["sample-00002.warc"]
        # ...unless a run for it is already under way: then the tick leaves it alone.
        running = instance.create_run_for_job(job, tags={"dagster/partition": "sample-00002.warc"}, status=dg.DagsterRunStatus.STARTED)
        assert tick() == []
        instance.report_run_failed(running)
        # A file that changes (new mtime, same bytes: the fingerprint moves) is out of sync again.
        os.utime(sample_inbox / "sample-00001.warc.gz", (1, 1))
        assert tick() == ["sample-00001.warc.gz", "sample-00002.warc"]
        # While a backfill for them is unfinished, the next tick does not ask again.
        os.utime(sample_inbox / "sample-00001.warc.gz", (2, 2))
        assert tick(finish=False) == ["sample-00001.warc.gz", "sample-00002.warc"]
        assert tick() == []


def test_sample_materializes_with_all_checks_passing(defs, sample_inbox):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", ["sample-00001.warc.gz"])
        result = defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key="sample-00001.warc.gz")
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.asset_key.to_user_string() for c in checks} == SHARD_INGEST
        assert all(c.passed for c in checks)
        materializations = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("pair_images")}
        meta = materializations["pair_images"]
        assert meta["rows_in"].value == 6
        assert meta["rejected_by_reason"].value == {"http_status": 1, "x_robots_noai": 1}
        assert "data:image/png;base64," in meta["preview"].value
        # Sample rows lead with what people read (here the thumbnail), ids last;
        # rejected rows show with their reason.
        header = meta["sample_rows"].value.splitlines()[0].strip("| ").split(" | ")
        assert header[0] == "thumbnail" and header[-1] == "pair_id", header
        assert "![thumbnail](data:image/png;base64," in meta["sample_rows"].value
        rejected = meta["sample_rejections"].value.splitlines()
        assert rejected[0].startswith("| reason | detail | record_id |") and any("x_robots_noai" in line for line in rejected[2:])


def test_cli_instance_settings_let_one_index_add_run_at_a_time(tmp_path):
    from asagi_cli.main import INSTANCE_SETTINGS

    (tmp_path / "dagster.yaml").write_text(INSTANCE_SETTINGS)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1  # the image_hash_index pool


def test_descriptions_show_html_tags_as_text(defs):
    """The UI renders descriptions as Markdown, where a bare <img> is HTML and vanishes
    ("One row per /:"): tags in descriptions go in code spans."""
    import re

    graph = defs.resolve_asset_graph()
    texts = {key.to_user_string(): graph.get(key).description or "" for key in graph.get_all_asset_keys()}
    repository = defs.get_repository_def()
    texts |= {f"job {j.name}": j.description or "" for j in repository.get_all_jobs()}
    texts |= {f"sensor {s.name}": s.description or "" for s in repository.sensor_defs}
    texts |= {f"schedule {s.name}": s.description or "" for s in repository.schedule_defs}
    bare = {name: text for name, text in texts.items() if re.search(r"</?[A-Za-z]", re.sub(r"`[^`]*`", "", text))}
    assert not bare, bare
    assert "`<img>`" in texts["image_text_pairs"]
