"""The global hash index and the per-partition filter on real Parquet files and a real
DuckDB: exact and near duplicates across shards, order independence, decontamination."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.filters import schemas
from asagi_dagster.filters.decontam import BENCHMARK_INDEX
from asagi_dagster.filters.dedup import build_hash_index
from asagi_dagster.filters.split import StaleIndexError, filter_partition
from asagi_dagster.query import benchmark_overlaps
from asagi_dagster.storage import StageWriter, Storage, StorageSettings

BASE = -0x25A5_F0F0_C3C3_696A  # a negative signed 64-bit hash


def flip(value: int, bits: int) -> int:
    """``value`` with its lowest ``bits`` bits flipped, kept signed 64-bit."""
    flipped = (value ^ ((1 << bits) - 1)) & (2**64 - 1)
    return flipped - (1 << 64) if flipped >= 1 << 63 else flipped


def pair(pair_id: str, origin: str, sha: str, phash: int, caption: str = "縁側の猫", source: str = "web", vg: int | None = None) -> dict:
    row = {name: None for name in schemas.SCREENED_PAIRS.names}
    row.update(
        pair_id=pair_id,
        source=source,
        shard="s",
        origin_id=origin,
        caption=caption,
        caption_field="alt",
        image_sha256=sha,
        image_phash=phash,
        image_format="JPEG",
        width=400,
        height=300,
        image_mode="RGB",
        animated=False,
        colour_spread=40.0,
        vg_image_id=vg,
    )
    return row


def write(path: Path, rows: list[dict], schema: pa.Schema = schemas.SCREENED_PAIRS) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


SHARDS = {
    "a": [pair("a1", "page-a", "sha-cat", BASE), pair("a2", "page-a", "sha-logo", 12345)],
    "b": [
        pair("b1", "page-b", "sha-cat", BASE, caption="別の説明"),  # same bytes, another page: exact duplicate
        pair("b2", "page-b", "sha-cat-small", flip(BASE, 3)),  # re-encoded copy: 3 bits away
        pair("b3", "page-b", "sha-dog", flip(BASE, 40)),  # another image
    ],
    "c": [
        # A dataset record with five captions of one photo: none is a duplicate of another.
        *[pair(f"c{i}", "stair/img-7", "sha-stair", flip(BASE, 20), caption=f"説明{i}", source="stair") for i in range(5)],
        pair("c5", "stair/img-7", "sha-stair", flip(BASE, 20), caption="説明0", source="stair"),  # a repeated caption
    ],
}


def index_decisions(tmp_path: Path, order: list[str], max_hamming: int = 4) -> dict[str, tuple[str, str]]:
    urls = [write(tmp_path / "screened" / f"{shard}.parquet", SHARDS[shard]) for shard in order]
    table = build_hash_index(duckdb.connect(), urls, max_hamming)
    return {row["image_sha256"]: (row["keeper_sha256"], row["keeper_origin"]) for row in table.to_pylist()}


def test_index_is_the_same_whatever_order_shards_arrive_in(tmp_path):
    results = [index_decisions(tmp_path / "-".join(order), list(order)) for order in itertools.permutations("abc")]
    assert all(result == results[0] for result in results)
    decisions = results[0]
    assert decisions["sha-cat"] == ("sha-cat", "1:web/page-a")  # page-a < page-b
    assert decisions["sha-cat-small"] == ("sha-cat", "1:web/page-a")  # near duplicate of the cat
    assert decisions["sha-dog"] == ("sha-dog", "1:web/page-b")
    assert decisions["sha-stair"] == ("sha-stair", "0:stair/stair/img-7")


def test_a_curated_dataset_copy_wins_over_a_web_copy(tmp_path):
    web = [pair("w1", "page-a", "sha-x", BASE)]
    dataset = [pair("d1", "img-9", "sha-x-resized", flip(BASE, 2), source="yj-captions")]  # "yj" > "web" by name
    table = build_hash_index(duckdb.connect(), [write(tmp_path / "w.parquet", web), write(tmp_path / "d.parquet", dataset)], 4)
    assert {row["image_sha256"]: row["keeper_origin"] for row in table.to_pylist()} == {"sha-x": "0:yj-captions/img-9", "sha-x-resized": "0:yj-captions/img-9"}


def test_near_duplicate_distance_is_configurable(tmp_path):
    assert index_decisions(tmp_path / "strict", list("abc"), max_hamming=2)["sha-cat-small"][0] == "sha-cat-small"
    assert index_decisions(tmp_path / "loose", list("abc"), max_hamming=3)["sha-cat-small"][0] == "sha-cat"


def test_near_duplicate_clusters_are_transitive(tmp_path):
    chain = [pair("x1", "p1", "s1", BASE), pair("x2", "p2", "s2", flip(BASE, 4)), pair("x3", "p3", "s3", flip(BASE, 8))]
    table = build_hash_index(duckdb.connect(), [write(tmp_path / "chain.parquet", chain)], 4)
    assert {row["image_sha256"]: row["keeper_sha256"] for row in table.to_pylist()} == {"s1": "s1", "s2": "s1", "s3": "s1"}
    assert {row["cluster_size"] for row in table.to_pylist()} == {3}


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(StorageSettings(root=str(tmp_path / "data")))


def run_filter(storage: Storage, tmp_path: Path, shard: str, benchmark_rows: list[dict], max_hamming: int = 8) -> StageWriter:
    urls = [write(tmp_path / "screened" / f"{s}.parquet", rows) for s, rows in SHARDS.items()]
    index = build_hash_index(duckdb.connect(), urls, 4)
    index_url = str(tmp_path / "index.parquet")
    pq.write_table(index, index_url)
    bench_url = write(tmp_path / "bench.parquet", benchmark_rows, BENCHMARK_INDEX)
    with StageWriter(storage, "filtered_pairs", shard, schemas.FILTERED_PAIRS, schemas.FILTERED_PAIRS_VERSION) as out:
        filter_partition(duckdb.connect(), str(tmp_path / "screened" / f"{shard}.parquet"), index_url, bench_url, out, max_hamming)
    return out


def rejections(storage: Storage, out: StageWriter) -> dict[str, str]:
    return {r["record_id"]: r["reason"] for r in storage.iter_rows(storage.strip_protocol(out.manifest.rejections_url))}


def kept(storage: Storage, out: StageWriter) -> list[str]:
    return sorted(r["pair_id"] for r in storage.iter_rows(storage.strip_protocol(out.manifest.data_url)))


def test_filter_keeps_one_copy_per_image_and_all_of_a_records_captions(storage, tmp_path):
    out = run_filter(storage, tmp_path, "b", [])
    assert kept(storage, out) == ["b3"]
    assert rejections(storage, out) == {"b1": "duplicate_image", "b2": "near_duplicate_image"}
    out = run_filter(storage, tmp_path, "c", [])
    assert kept(storage, out) == ["c0", "c1", "c2", "c3", "c4"]
    assert rejections(storage, out) == {"c5": "duplicate_pair"}
    steps = {row["rule"]: (row["checked"], row["rejected"]) for row in out.manifest.rule_stats}
    assert steps["duplicate_pair"] == (6, 1)


def test_benchmark_images_and_visual_genome_ids_are_removed(storage, tmp_path):
    bench = [
        {"record_id": "japanese-heron-bench/cat.png", "benchmark": "japanese-heron-bench", "image_phash": flip(BASE, 6), "vg_image_id": None},
        {"record_id": "ja-vg-vqa-500/vg:1", "benchmark": "ja-vg-vqa-500", "image_phash": None, "vg_image_id": 2317},
    ]
    SHARDS["d"] = [
        pair("d1", "vg/1", "sha-vg", flip(BASE, 50), source="ja-visual-genome", vg=2317),
        pair("d2", "vg/2", "sha-vg2", 777, source="ja-visual-genome", vg=9),
    ]
    try:
        out = run_filter(storage, tmp_path, "a", bench)
        assert rejections(storage, out) == {"a1": "benchmark_overlap"}
        out_d = run_filter(storage, tmp_path, "d", bench)
        assert rejections(storage, out_d) == {"d1": "benchmark_overlap"}
        con = duckdb.connect()
        bench_url = str(tmp_path / "bench.parquet")
        # The audit: nothing left in what was kept, and it does see overlap where there is some.
        assert benchmark_overlaps(con, out.manifest.data_url, bench_url, 8) == []
        assert benchmark_overlaps(con, out_d.manifest.data_url, bench_url, 8) == []
        leaked = benchmark_overlaps(con, str(tmp_path / "screened" / "a.parquet"), bench_url, 8)
        assert [(r["pair_id"], r["distance"]) for r in leaked] == [("a1", 6)]
        assert run_filter(storage, tmp_path, "a", bench, max_hamming=5).manifest.rows_rejected == 0
    finally:
        del SHARDS["d"]


def test_a_partition_screened_after_the_index_is_a_clear_error(storage, tmp_path):
    index_url = str(tmp_path / "index.parquet")
    pq.write_table(build_hash_index(duckdb.connect(), [write(tmp_path / "only-a.parquet", SHARDS["a"])], 4), index_url)
    late = write(tmp_path / "late.parquet", SHARDS["b"])
    bench_url = write(tmp_path / "bench.parquet", [], BENCHMARK_INDEX)
    with pytest.raises(StaleIndexError, match="materialize image_hash_index"):
        with StageWriter(storage, "filtered_pairs", "b", schemas.FILTERED_PAIRS, 1) as out:
            filter_partition(duckdb.connect(), late, index_url, bench_url, out, 8)
    assert not storage.exists(storage.manifest_path("filtered_pairs", "b"))
