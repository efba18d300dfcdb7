"""The benchmark image index from the sources a profile can name: an image folder, a
Parquet file with Hugging Face image structs, a Visual Genome id list."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.filters import Rejected
from asagi_dagster.filters.decontam import BenchmarkSourceError, benchmark_rows
from asagi_dagster.filters.images import hamming
from asagi_dagster.filters.rules import PairScreen
from asagi_dagster.filters.settings import BenchmarkImages, FilterSettings, ImageSafetySettings
from tests.filters import images

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
    from asagi_dagster.config import load_config
    from tests.conftest import write_profile

    profile = write_profile(tmp_path, filters={"decontamination": {"benchmarks": {"b": {"images": "bench/b", "vg_image_ids": "bench/ids.txt"}}}})
    benchmarks = load_config(profile).filters.decontamination.benchmarks
    assert benchmarks["b"].images == str(tmp_path / "bench" / "b")
    assert benchmarks["b"].vg_image_ids == str(tmp_path / "bench" / "ids.txt")
