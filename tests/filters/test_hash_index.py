"""The incremental hash index against today's exhaustive build_hash_index, on real
Parquet files and a real DuckDB: same rows for any set of shards, whatever order and
grouping they are added in, and a "changed shards" report that is exactly the earlier
shards whose filter decisions differ, worked out from build_hash_index before and after."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asagi_dagster.filters import schemas
from asagi_dagster.filters.decontam import BENCHMARK_INDEX
from asagi_dagster.filters.dedup import ORIGIN_KEY_SQL, build_hash_index
from asagi_dagster.filters.hash_index import (
    GENERATION_FILE,
    INDEX_FOLDER,
    HashIndex,
    IndexConflict,
    ShardAlreadyIndexed,
    band_layout,
    connected_components,
    open_on_root,
    rewritten_rows,
    shard_rows_path,
    sync_shards,
    write_changes,
    write_shard_rows,
)
from asagi_dagster.filters.split import filter_partition
from asagi_dagster.storage import StageWriter, Storage, StorageSettings
from tests.conftest import BUCKET
from tests.filters.test_dedup import SHARDS, pair, write

MASK64 = (1 << 64) - 1


def signed(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def flip_bits(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return signed(value)


def random_shards(seed: int, max_hamming: int = 4, shards: int = 6, dense: bool = False) -> dict[str, list[dict]]:
    """Shards of screened pairs with planted near-duplicate clusters, chains longer than
    the distance (joined only transitively), the same bytes from several web pages and
    datasets, and (``dense``) hashes crowded into 16 bits so that clusters grow large."""
    rng = random.Random(seed)
    space = (1 << 16) - 1 if dense else MASK64

    def fresh() -> int:
        return signed(rng.getrandbits(64) & space)

    images: list[tuple[str, int]] = []
    for n in range(40):
        base = fresh()
        images.append((f"sha-{seed}-{n}", base))
        kind = rng.choice(["alone", "near", "chain"])
        if kind == "near":  # copies within the distance of the original
            for m in range(rng.randint(1, 3)):
                images.append((f"sha-{seed}-{n}-near{m}", flip_bits(base, rng.sample(range(64), rng.randint(min(1, max_hamming), max_hamming)))))
        elif kind == "chain":  # each link within the distance of the previous one, the ends far apart
            value = base
            for m in range(rng.randint(2, 4)):
                value = flip_bits(value, rng.sample(range(64), max_hamming))
                images.append((f"sha-{seed}-{n}-chain{m}", value))
    sources = ["web", "web", "web", "stair", "yj-captions"]
    out: dict[str, list[dict]] = {f"shard-{k}": [] for k in range(shards)}
    for number, (sha, phash) in enumerate(images):
        for copy in range(rng.choice([1, 1, 1, 2, 3])):  # the same bytes from several origins and shards
            shard = f"shard-{rng.randrange(shards)}"
            source = rng.choice(sources)
            origin = f"page-{rng.randrange(60)}" if source == "web" else f"rec-{rng.randrange(60)}"
            for caption in range(rng.choice([1, 1, 2])):
                rows = out[shard]
                rows.append(pair(f"{shard}-{len(rows)}", origin, sha, phash, caption=f"説明{caption}", source=source))
    return {key: rows for key, rows in out.items() if rows}


def write_shards(folder: Path, shards: dict[str, list[dict]]) -> dict[str, str]:
    return {key: write(folder / f"{key}.parquet", rows) for key, rows in shards.items()}


def reference_decisions(urls: dict[str, str], max_hamming: int) -> dict[tuple[str, str, str], str]:
    """(shard, image, origin) -> decision, from build_hash_index and filter_partition's rules."""
    if not urls:
        return {}
    index = {row["image_sha256"]: row for row in build_hash_index(duckdb.connect(), list(urls.values()), max_hamming).to_pylist()}
    decisions = {}
    con = duckdb.connect()
    for shard, url in urls.items():
        for sha, origin in con.execute(f"SELECT DISTINCT image_sha256, {ORIGIN_KEY_SQL} FROM read_parquet(?)", [url]).fetchall():
            row = index[sha]
            if origin != row["first_origin"]:
                decisions[shard, sha, origin] = "duplicate_image"
            elif row["keeper_sha256"] != sha:
                decisions[shard, sha, origin] = "near_duplicate_image"
            else:
                decisions[shard, sha, origin] = "keep"
    return decisions


def shards_that_differ(before: dict, after: dict) -> list[str]:
    return sorted({key[0] for key, decision in before.items() if after[key] != decision})


def add_in_batches(path: Path, urls: dict[str, str], batches: list[list[str]], max_hamming: int) -> HashIndex:
    index = HashIndex.open(str(path), max_hamming)
    for batch in batches:
        index.add({key: urls[key] for key in batch})
    return index


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_any_arrival_order_gives_build_hash_index_and_its_decisions(tmp_path, seed, dense):
    urls = write_shards(tmp_path / "screened", random_shards(seed, dense=dense))
    expected = build_hash_index(duckdb.connect(), list(urls.values()), 4)
    assert expected.num_rows > 50 and max(expected.column("cluster_size").to_pylist()) >= 3  # the data does test clustering
    keys = sorted(urls)
    shuffled = keys[:]
    random.Random(seed).shuffle(shuffled)
    orders = {
        "one by one": [[key] for key in keys],
        "reversed": [[key] for key in reversed(keys)],
        "shuffled": [[key] for key in shuffled],
        "two batches": [shuffled[: len(keys) // 2], shuffled[len(keys) // 2 :]],
        "all at once": [keys],
    }
    for name, batches in orders.items():
        index = add_in_batches(tmp_path / f"{name}.duckdb", urls, batches, 4)
        assert index.to_table().equals(expected), name
        assert index.decisions() == reference_decisions(urls, 4), name
        index.close()


@pytest.mark.parametrize("dense", [False, True])
def test_changed_shards_are_exactly_those_whose_decisions_differ(tmp_path, dense):
    urls = write_shards(tmp_path / "screened", random_shards(7, shards=8, dense=dense))
    order = sorted(urls)
    random.Random(3).shuffle(order)
    index = HashIndex.open(str(tmp_path / "index.duckdb"), 4)
    added: dict[str, str] = {}
    reports = []
    for key in order:
        before = reference_decisions(added, 4)
        added[key] = urls[key]
        result = index.add({key: urls[key]})
        after = reference_decisions(added, 4)
        assert result.changed_shards == shards_that_differ(before, after), key
        reports.append(result.changed_shards)
    assert any(reports)  # some add did change an earlier shard's decisions


def test_the_demo_shards_in_every_order(tmp_path):
    """The shards of test_dedup: a dataset copy, a re-encoded copy, a record's five captions."""
    urls = write_shards(tmp_path / "screened", SHARDS)
    expected = build_hash_index(duckdb.connect(), list(urls.values()), 4)
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "a", "c"]):
        index = add_in_batches(tmp_path / f"{''.join(order)}.duckdb", urls, [[key] for key in order], 4)
        assert index.to_table().equals(expected)
        index.close()
    index = HashIndex.open(str(tmp_path / "b-then-a.duckdb"), 4)
    index.add({"b": urls["b"]})
    # page-a brings the same cat bytes from a smaller origin: b's copy and its re-encoding become duplicates.
    assert index.add({"a": urls["a"]}).changed_shards == ["b"]


@pytest.mark.parametrize("max_hamming", [0, 1, 2, 3, 5, 8])
def test_other_distances_give_the_same_clusters(tmp_path, max_hamming):
    urls = write_shards(tmp_path / "screened", random_shards(11, max_hamming=max_hamming, dense=True))
    expected = build_hash_index(duckdb.connect(), list(urls.values()), max_hamming)
    index = add_in_batches(tmp_path / "index.duckdb", urls, [[key] for key in sorted(urls, reverse=True)], max_hamming)
    assert index.to_table().equals(expected)


@pytest.mark.parametrize("max_hamming", [0, 1, 2, 3, 4, 5, 8, 16])
def test_the_band_layout_reaches_every_hash_within_the_distance(max_hamming):
    """Pigeonhole: for differences spread over the bands as evenly as possible (the worst case),
    some band differs in no more bits than the probe radius."""
    bands, radius = band_layout(max_hamming)
    assert sum(band.width for band in bands) == 64
    rng = random.Random(max_hamming)
    for _ in range(2000):
        bits = rng.sample(range(64), max_hamming)
        per_band = [sum(band.shift <= bit < band.shift + band.width for bit in bits) for band in bands]
        assert min(per_band) <= radius


def test_100k_simulated_hashes_match_the_exhaustive_build(tmp_path):
    rng = np.random.default_rng(18)
    bases = rng.integers(-(2**63), 2**63 - 1, size=90_000, dtype=np.int64)
    planted = rng.choice(bases, size=10_000)
    flips = np.zeros(10_000, dtype=np.uint64)
    for _ in range(4):  # up to 4 random bits flipped (a repeated bit cancels, so 0..4 bits)
        flips ^= np.uint64(1) << rng.integers(0, 64, size=10_000).astype(np.uint64)
    hashes = np.concatenate([bases, (planted.view(np.uint64) ^ flips).view(np.int64)])
    con = duckdb.connect()
    con.register("hashes", pa.table({"n": np.arange(len(hashes)), "image_phash": hashes}))
    urls = {}
    for shard in range(4):
        url = str(tmp_path / f"sim-{shard}.parquet")
        con.execute(
            f"""COPY (SELECT printf('%064x', n) AS image_sha256, image_phash,
                             CASE WHEN n % 7 = 0 THEN 'stair' ELSE 'web' END AS source, 'o' || (n // 3) AS origin_id
                      FROM hashes WHERE n % 4 = {shard}) TO '{url}' (FORMAT parquet)"""
        )
        urls[f"sim-{shard}"] = url
    expected = build_hash_index(duckdb.connect(), list(urls.values()), 4)
    assert expected.num_rows == 100_000 and sum(1 for size in expected.column("cluster_size").to_pylist() if size > 1) > 5_000
    index = add_in_batches(tmp_path / "index.duckdb", urls, [["sim-2"], ["sim-0", "sim-3"], ["sim-1"]], 4)
    assert index.to_table().equals(expected)


def test_filtering_a_shard_with_its_own_index_rows_gives_the_same_split(tmp_path):
    """What filtered_pairs will read: shard_table(shard) instead of the whole index."""
    urls = write_shards(tmp_path / "screened", random_shards(5))
    index = add_in_batches(tmp_path / "index.duckdb", urls, [[key] for key in sorted(urls)], 4)
    whole = str(tmp_path / "whole.parquet")
    pq.write_table(build_hash_index(duckdb.connect(), list(urls.values()), 4), whole)
    bench = write(tmp_path / "bench.parquet", [], BENCHMARK_INDEX)
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    own = write_shard_rows(storage, index, sorted(urls))
    reasons = set()
    for shard, url in urls.items():
        split = filtered(storage, shard, url, whole, bench)
        assert split == filtered(storage, shard, url, own[shard], bench)
        reasons |= {reason for _, reason in split[1]}
    assert {"duplicate_image", "near_duplicate_image"} <= reasons


def filtered(storage: Storage, shard: str, screened: str, index_url: str, bench: str) -> tuple[list, list]:
    with StageWriter(storage, "filtered_pairs", shard, schemas.FILTERED_PAIRS, schemas.FILTERED_PAIRS_VERSION) as out:
        filter_partition(duckdb.connect(), screened, index_url, bench, out, 8)
    kept = sorted(row["pair_id"] for row in storage.iter_rows(storage.strip_protocol(out.manifest.data_url)))
    rejected = sorted((r["record_id"], r["reason"]) for r in storage.iter_rows(storage.strip_protocol(out.manifest.rejections_url)))
    return kept, rejected


def test_a_shard_is_added_once_and_a_failed_add_changes_nothing(tmp_path):
    urls = write_shards(tmp_path / "screened", SHARDS)
    index = HashIndex.open(str(tmp_path / "index.duckdb"), 4)
    index.add({"a": urls["a"]})
    before = index.to_table()
    with pytest.raises(ShardAlreadyIndexed):
        index.add({"a": urls["a"], "b": urls["b"]})
    with pytest.raises(duckdb.IOException):  # b's file is fine, the second one is missing: neither goes in
        index.add({"b": urls["b"], "c": str(tmp_path / "missing.parquet")})
    assert index.to_table().equals(before) and index.shards() == ["a"] and index.generation == 1


def test_an_index_built_for_another_distance_is_refused(tmp_path):
    HashIndex.open(str(tmp_path / "index.duckdb"), 4).close()
    with pytest.raises(ValueError, match="max_hamming=4"):
        HashIndex.open(str(tmp_path / "index.duckdb"), 6)


def test_the_index_on_the_storage_root_persists_between_runs_and_refuses_a_second_writer(tmp_path):
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    urls = write_shards(tmp_path / "screened", SHARDS)
    with open_on_root(storage, 4) as index:
        index.add({"b": urls["b"]})
        assert open_in_another_process(storage.path(*INDEX_FOLDER, "index.duckdb")) == "IndexConflict"
    with open_on_root(storage, 4) as index:
        assert index.add({"a": urls["a"], "c": urls["c"]}).changed_shards == ["b"]
        assert index.to_table().equals(build_hash_index(duckdb.connect(), list(urls.values()), 4))
    assert storage.read_json(storage.path(*INDEX_FOLDER, GENERATION_FILE)) == {"generation": 2}


def open_in_another_process(path: str) -> str:
    """What a second process gets when it opens the index for an add."""
    code = (
        "from asagi_dagster.filters.hash_index import HashIndex, IndexConflict\n"
        "try:\n"
        f"    HashIndex.open({path!r}, 4)\n"
        "    print('opened')\n"
        "except IndexConflict:\n"
        "    print('IndexConflict')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_connected_components_match_a_plain_union_find():
    rng = np.random.default_rng(4)
    count = 2_000
    left, right = rng.integers(0, count, 1_500), rng.integers(0, count, 1_500)
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    for a, b in zip(left, right):
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    assert connected_components(count, left, right).tolist() == [root(node) for node in range(count)]


def test_an_empty_shard_is_recorded_as_added(tmp_path):
    empty = write(tmp_path / "empty.parquet", [])
    index = HashIndex.open(str(tmp_path / "index.duckdb"), 4)
    assert index.add({"empty": empty}).images_added == 0
    assert index.shards() == ["empty"]
    with pytest.raises(ShardAlreadyIndexed):
        index.add({"empty": empty})


def test_the_index_on_an_s3_root_is_downloaded_changed_and_uploaded(tmp_path, s3_endpoint):
    storage = Storage(StorageSettings(root=f"s3://{BUCKET}/data", s3={"endpoint_url": s3_endpoint}))
    urls = {}
    for key, local in write_shards(tmp_path / "screened", SHARDS).items():  # screened pairs live on the root too
        dest = storage.path("screened_pairs", key, "data.parquet")
        storage.fs.put_file(local, dest)
        urls[key] = storage.url(dest)
    with open_on_root(storage, 4) as index:
        index.add({"b": urls["b"]})
    with open_on_root(storage, 4) as index:
        assert index.add({"a": urls["a"]}).changed_shards == ["b"]
    generation_path = storage.path(*INDEX_FOLDER, GENERATION_FILE)
    with pytest.raises(IndexConflict):
        with open_on_root(storage, 4) as index:
            index.add({"c": urls["c"]})
            storage.write_json(generation_path, {"generation": 5})  # another add committed meanwhile
    storage.write_json(generation_path, {"generation": 2})
    with open_on_root(storage, 4) as index:  # the conflicting add left nothing behind
        assert index.shards() == ["a", "b"]
        index.add({"c": urls["c"]})
        assert index.to_table().equals(build_hash_index(duckdb.connect(), list(write_shards(tmp_path / "again", SHARDS).values()), 4))


@pytest.mark.parametrize("dense", [False, True])
def test_shards_removed_and_replaced_give_build_hash_index_of_what_is_left(tmp_path, dense):
    """Adds, removals and re-screened shards in a random sequence: after each step the index is
    build_hash_index of the shards it holds, and the report names exactly the other shards
    whose decisions differ (clusters split when the image joining them goes)."""
    shards = random_shards(21, shards=8, dense=dense)
    urls = write_shards(tmp_path / "screened", shards)
    rescreened = {key: write(tmp_path / "rescreened" / f"{key}.parquet", rows[::2]) for key, rows in shards.items()}
    rng = random.Random(9)
    index = HashIndex.open(str(tmp_path / "index.duckdb"), 4)
    held: dict[str, str] = {}
    reports = []
    for step in range(14):
        before = reference_decisions(held, 4)
        absent = sorted(set(urls) - set(held))
        action = rng.choice(["add", "remove", "replace"]) if held and absent else ("add" if absent else rng.choice(["remove", "replace"]))
        if action == "add":
            key = rng.choice(absent)
            held[key] = urls[key]
            changed = index.add({key: urls[key]}).changed_shards
        elif action == "remove":
            key = rng.choice(sorted(held))
            del held[key]
            changed = index.remove([key])
        else:
            key = rng.choice(sorted(held))
            held[key] = rescreened[key] if held[key] == urls[key] else urls[key]
            result = index.add({key: held[key]}, replace=True)
            assert result.replaced == [key]
            changed = result.changed_shards
        after = reference_decisions(held, 4)
        expected = build_hash_index(duckdb.connect(), list(held.values()), 4) if held else None
        assert index.shards() == sorted(held), step
        assert index.to_table().equals(expected) if held else index.image_count() == 0, (step, action, key)
        assert changed == shards_that_differ({k: v for k, v in before.items() if k[0] != key}, after), (step, action, key)
        reports.append(changed)
    assert any(reports)


def test_replacing_a_shard_with_the_same_pairs_changes_no_other_shard(tmp_path):
    urls = write_shards(tmp_path / "screened", random_shards(8, dense=True))
    index = add_in_batches(tmp_path / "index.duckdb", urls, [sorted(urls)], 4)
    before = index.to_table()
    for key in sorted(urls):
        assert index.add({key: urls[key]}, replace=True).changed_shards == []
    assert index.to_table().equals(before)


def test_sync_plan_compares_the_indexed_versions_with_the_screened_ones(tmp_path):
    urls = write_shards(tmp_path / "screened", SHARDS)
    index = HashIndex.open(str(tmp_path / "index.duckdb"), 4)
    index.add({"a": urls["a"], "b": urls["b"]}, versions={"a": "v1", "b": "v1"})
    plan = index.sync_plan({"a": "v1", "b": "v2", "c": "v1"})
    assert (plan.add, plan.replace, plan.remove) == (["c"], ["b"], [])
    index.add({"b": urls["b"]}, replace=True, versions={"b": "v2"})
    plan = index.sync_plan({"b": "v2"})
    assert (plan.add, plan.replace, plan.remove) == ([], [], ["a"])


def test_sync_adds_replaces_removes_and_lists_exactly_the_shards_to_refilter(tmp_path):
    """What image_hash_index does each run: the index follows the screened partitions'
    versions, and the shards it lists to re-filter are the added and replaced ones and
    those whose decisions differ from before."""
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    urls = write_shards(tmp_path / "screened", random_shards(7))
    keys = sorted(urls)
    first = {key: "v1" for key in keys[:-1]}
    with open_on_root(storage, 4) as index:
        result = sync_shards(storage, index, first, urls)
        index.clear_pending(result.refilter)  # as the asset does once its changes file names them
    assert result.refilter == sorted(first) == sorted(result.shard_rows)
    # Next run: the last shard arrives, the first is no longer screened, the second was screened again.
    second = {**{key: "v1" for key in keys[2:]}, keys[1]: "v2"}
    before = reference_decisions({key: urls[key] for key in first}, 4)
    after = reference_decisions({key: urls[key] for key in second}, 4)
    with open_on_root(storage, 4) as index:
        result = sync_shards(storage, index, second, urls)
        assert index.to_table().equals(build_hash_index(duckdb.connect(), [urls[key] for key in sorted(second)], 4))
    assert (result.plan.add, result.plan.replace, result.plan.remove) == ([keys[-1]], [keys[1]], [keys[0]])
    still_there = {key: decision for key, decision in before.items() if key[0] in second}
    assert result.refilter == sorted(set(shards_that_differ(still_there, after)) | {keys[-1], keys[1]})
    assert not storage.exists(shard_rows_path(storage, keys[0]))  # a removed shard's filter run finds no rows
    for count, rows in rewritten_rows(storage, result.shard_rows):
        assert count == len(rows) and len({row["shard"] for row in rows}) == 1
    changes = storage.read_json(storage.strip_protocol(write_changes(storage, result)))
    assert changes["refilter"] == result.refilter and changes["generation"] == result.generation


def test_a_sync_stopped_before_its_changes_were_written_loses_no_refilter(tmp_path):
    """The index commits an add before the rows files and the changes file are written; a
    run killed in between must not leave shards unfiltered (or without rows) for good:
    the next sync lists them again, under a generation of its own."""
    storage = Storage(StorageSettings(root=str(tmp_path / "data")))
    urls = write_shards(tmp_path / "screened", random_shards(11))
    keys = sorted(urls)
    first = {key: "v1" for key in keys[:-1]}
    with open_on_root(storage, 4) as index:
        done = sync_shards(storage, index, first, urls)
        index.clear_pending(done.refilter)
    everything = {key: "v1" for key in keys}
    with open_on_root(storage, 4) as index:  # adds the last shard, then the run is killed:
        index.add({keys[-1]: urls[keys[-1]]}, versions={keys[-1]: "v1"})  # committed; no rows, no changes file
        lost = index.pending_refilter()
        generation = index.generation
    assert keys[-1] in lost and not storage.exists(shard_rows_path(storage, keys[-1]))
    with open_on_root(storage, 4) as index:
        again = sync_shards(storage, index, everything, urls)
        assert (again.plan.add, again.plan.replace, again.plan.remove) == ([], [], [])  # the index is up to date...
        index.clear_pending(again.refilter)
        assert index.pending_refilter() == []
    assert again.refilter == lost and again.generation == generation + 1  # ...and what the killed run owed is asked for
    assert all(storage.exists(shard_rows_path(storage, key)) for key in lost)
    with open_on_root(storage, 4) as index:
        assert sync_shards(storage, index, everything, urls).refilter == []  # asked once
