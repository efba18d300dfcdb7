"""The benchmark image index: from the evaluated benchmarks' items (through Dagster, the
way `asagi filter` builds it), and from the sources a profile can name for a benchmark
it does not evaluate: an image folder, a Parquet file with Hugging Face image structs, a
Visual Genome id list."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.config import load_config
from asagi_dagster.core import Rejected
from asagi_dagster.definitions import build_definitions
from asagi_dagster.filters.decontam import BenchmarkSourceError, benchmark_rows, item_rows
from asagi_dagster.filters.images import hamming
from asagi_dagster.filters.rules import PairScreen
from asagi_dagster.filters.settings import BenchmarkImages, FilterSettings, ImageSafetySettings
from asagi_dagster.settings import ConfigError
from asagi_dagster.storage import Storage
from asagi_sample.benchmarks import write_benchmark_sample
from asagi_sample.site import write_filter_sample, write_sample
from tests.conftest import write_profile
from tests.filters import images
from tests.filters.test_filter_assets import SHARDS

SAFETY = ImageSafetySettings()


def rows(name: str, **paths) -> list[tuple[str, dict | Rejected]]:
    return list(benchmark_rows(name, BenchmarkImages(**paths), SAFETY))


def test_folder_of_images_hashes_like_screening_and_reports_bad_files(tmp_path):
    folder = tmp_path / "heron"
    (folder / "sub").mkdir(parents=True)
    (folder / "cat.jpg").write_bytes(images.photo("chelsea"))
    (folder / "sub" / "coffee.png").write_bytes(images.photo("coffee", "PNG"))
    (folder / "broken.jpg").write_bytes(images.photo("rocket")[:3000])
    (folder / "notes.txt").write_text("not an image")
    result = dict(rows("japanese-heron-bench", images=str(folder)))
    assert sorted(result) == ["japanese-heron-bench/broken.jpg", "japanese-heron-bench/cat.jpg", "japanese-heron-bench/sub/coffee.png"]
    assert isinstance(result["japanese-heron-bench/broken.jpg"], Rejected)
    assert result["japanese-heron-bench/broken.jpg"].reason == "corrupt_image"
    screened = PairScreen(FilterSettings()).check("縁側の猫", images.photo("chelsea"))
    assert hamming(result["japanese-heron-bench/cat.jpg"]["image_phash"], screened.phash) == 0


def test_parquet_with_hugging_face_image_structs(tmp_path):
    path = tmp_path / "jvb.parquet"
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": images.photo("coffee"), "path": "a.jpg"}, {"bytes": images.photo("rocket"), "path": None}], image_type)})
    pq.write_table(table, path)
    result = rows("ja-vlm-bench-in-the-wild", images=str(path))
    assert [record_id for record_id, _ in result] == ["ja-vlm-bench-in-the-wild/row0", "ja-vlm-bench-in-the-wild/row1"]
    assert all(isinstance(row, dict) and row["image_phash"] is not None for _, row in result)


def test_visual_genome_ids(tmp_path):
    ids = tmp_path / "vg.txt"
    ids.write_text("2317\n\n107899\n")
    result = rows("ja-vg-vqa-500", vg_image_ids=str(ids))
    assert [(r["vg_image_id"], r["image_phash"]) for _, r in result] == [(2317, None), (107899, None)]
    ids.write_text("2317\nabc\n")
    with pytest.raises(BenchmarkSourceError, match="vg.txt:2"):
        rows("ja-vg-vqa-500", vg_image_ids=str(ids))


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(BenchmarkSourceError, match="benchmark images not found"):
        rows("x", images=str(tmp_path / "nowhere"))
    with pytest.raises(BenchmarkSourceError, match="cannot read Visual Genome ids"):
        rows("x", vg_image_ids=str(tmp_path / "nowhere.txt"))
    bad = tmp_path / "no-image-column.parquet"
    pq.write_table(pa.table({"question": ["q"]}), bad)
    with pytest.raises(BenchmarkSourceError, match="no 'image' column"):
        rows("x", images=str(bad))


def test_profile_paths_resolve_relative_to_the_profile(tmp_path):
    profile = write_profile(tmp_path, filters={"decontamination": {"benchmarks": {"b": {"images": "bench/b", "vg_image_ids": "bench/ids.txt"}}}})
    benchmarks = load_config(profile).filters.decontamination.benchmarks
    assert benchmarks["b"].images == str(tmp_path / "bench" / "b")
    assert benchmarks["b"].vg_image_ids == str(tmp_path / "bench" / "ids.txt")


def item(image_id: str, data: bytes) -> dict:
    return {"image_id": image_id, "bytes": data}


def test_items_give_one_row_per_distinct_image_and_visual_genome_id():
    heron = [item("a.jpg", images.photo("chelsea")), item("a.jpg", images.photo("chelsea")), item("b.jpg", images.photo("coffee"))]
    result = list(item_rows(BENCHMARKS["japanese-heron-bench"], heron, SAFETY))
    assert [record_id.split(":")[0] for record_id, _ in result] == ["japanese-heron-bench/a.jpg", "japanese-heron-bench/b.jpg"]
    screened = PairScreen(FilterSettings()).check("縁側の猫", images.photo("chelsea"))
    assert hamming(result[0][1]["image_phash"], screened.phash) == 0 and result[0][1]["vg_image_id"] is None

    vg = [item("2317", images.photo("rocket")), item("2317", images.photo("rocket")), item("x9", images.photo("horse")), item("5", b"not an image")]
    result = dict(item_rows(BENCHMARKS["ja-vg-vqa-500"], vg, SAFETY))
    assert result["ja-vg-vqa-500/vg:2317"]["vg_image_id"] == 2317
    assert result["ja-vg-vqa-500/vg:5"]["vg_image_id"] == 5  # the id still counts when its image cannot be read
    assert result["ja-vg-vqa-500/vg:x9"].reason == "invalid_vg_image_id"
    unreadable = [r for r in result.values() if isinstance(r, Rejected) and r.reason != "invalid_vg_image_id"]
    assert len(unreadable) == 1 and len(result) == 6  # 3 distinct images, 3 distinct ids


def test_an_evaluated_benchmark_is_not_also_named_by_path(tmp_path):
    profile = write_profile(
        tmp_path,
        models={"m": {"id": "builtin:tiny-llava-ja"}},
        evaluation={"benchmarks": {"ja-vg-vqa-500": {"path": "bench"}}, "models": ["m"]},
        filters={"decontamination": {"benchmarks": {"ja-vg-vqa-500": {"vg_image_ids": "ids.txt"}, "other": {"images": "other"}}}},
    )
    with pytest.raises(ConfigError, match="ja-vg-vqa-500 is evaluated"):
        load_config(profile)


class Ticks:
    """The automation conditions evaluated tick after tick, each from the last one's cursor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def __call__(self) -> set[str]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {key.to_user_string() for key in self.defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(key)}


def test_filtering_reads_the_evaluated_benchmarks_items(tmp_path, served_dir, image_server):
    """A profile that evaluates the in-the-wild and VG-VQA stand-ins names no benchmark
    image path: the index is built from benchmark_items, refuses to run before them, and
    removes the sample's rocket photo (an in-the-wild image) from the web pairs."""
    evaluation = {"benchmarks": {name: {"path": str(tmp_path / name)} for name in ("ja-vlm-bench-in-the-wild", "ja-vg-vqa-500")}, "models": ["m"]}
    profile = write_profile(tmp_path, models={"m": {"id": "builtin:tiny-llava-ja"}}, evaluation=evaluation)
    config = load_config(profile)
    assert config.evaluation is not None and config.filters.decontamination.benchmarks == {}
    write_benchmark_sample(config.evaluation.benchmarks)
    write_filter_sample(config.filters)  # the document reference
    write_sample(Path(config.sources.web.inbox), served_dir, image_server)
    defs = build_definitions(str(profile))
    index_key = dg.AssetKey("benchmark_image_index")
    assert dg.AssetKey("benchmark_items") in defs.resolve_asset_graph().get(index_key).parent_keys
    with dg.instance_for_test() as instance:
        # The automations load the items when missing and build the index only once all are
        # there, even after a build that failed for want of them (the daemon's ticks, in turn).
        tick = Ticks(defs, instance)
        first = tick()
        assert {"benchmark_items", "document_image_reference"} <= first and "benchmark_image_index" not in first
        early = defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance, raise_on_error=False)
        assert not early.success
        assert "benchmark_items has no materialization for ja-vg-vqa-500" in str(early.get_step_failure_events()[0].event_specific_data.error)
        for number, name in enumerate(config.evaluation.benchmarks):
            if number:
                assert "benchmark_image_index" not in tick()  # one benchmark's items are not enough
            assert defs.resolve_job_def("load_benchmarks").execute_in_process(instance=instance, partition_key=name).success
        assert "benchmark_image_index" in tick()
        instance.add_dynamic_partitions("warc_shards", SHARDS)
        for shard in SHARDS:
            assert defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key=shard).success
        assert defs.resolve_job_def("filter_indexes").execute_in_process(instance=instance).success
        index = Storage(config.storage).read_manifest("benchmark_image_index", None)
        # 5 distinct in-the-wild photos (6 questions), 3 VG-VQA photos and their 3 Visual Genome ids
        assert (index.rows_in, index.rows_out) == (11, 11)
        overlaps = {}
        for shard in SHARDS:
            filtered = defs.resolve_job_def("filtered_splits").execute_in_process(instance=instance, partition_key=shard)
            assert filtered.success
            overlaps[shard] = filtered.asset_materializations_for_node("filtered_pairs")[0].metadata["rejected_by_reason"].value.get("benchmark_overlap")
        assert sorted(overlaps.values(), key=bool) == [None, None, 1], overlaps  # the rocket, once
