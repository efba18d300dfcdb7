"""Batches of inbox files (D111): grouped by folder in name order, keyed by their first
file, committed whole to the storage root and read back per folder, locally and on S3."""

from __future__ import annotations

import pytest

from asagi_dagster.storage import Storage, StorageSettings
from asagi_dagster.web.batches import batch_keys_of, batch_path, commit_batches, files_of, folder_batches, make_batches, registered_files
from asagi_dagster.web.inbox import ShardFile, folder_of
from tests.conftest import BUCKET


def shard(key: str) -> ShardFile:
    return ShardFile(key, f"file:///inbox/{key.replace('__', '/')}", f"10:{key}")


SEGMENT_A = [shard(f"CC-MAIN-2026-05__segments__1700.0__warc__f{i:03d}.warc.gz") for i in range(5)]
SEGMENT_B = [shard(f"CC-MAIN-2026-05__segments__1701.0__warc__f{i:03d}.warc.gz") for i in range(3)]
TOP = [shard("top-1.warc"), shard("top-0.warc")]


def test_files_are_batched_by_folder_in_name_order_and_keyed_by_their_first():
    batches = make_batches([*reversed(SEGMENT_B), *TOP, *SEGMENT_A], files_per_partition=2)
    assert [(b.key, [f.key.rsplit("__", 1)[-1] for f in b.files]) for b in batches] == [
        (SEGMENT_A[0].key, ["f000.warc.gz", "f001.warc.gz"]),
        (SEGMENT_A[2].key, ["f002.warc.gz", "f003.warc.gz"]),
        (SEGMENT_A[4].key, ["f004.warc.gz"]),
        (SEGMENT_B[0].key, ["f000.warc.gz", "f001.warc.gz"]),
        (SEGMENT_B[2].key, ["f002.warc.gz"]),
        ("top-0.warc", ["top-0.warc", "top-1.warc"]),
    ]
    assert {folder_of(f.key) for b in batches[:3] for f in b.files} == {"CC-MAIN-2026-05__segments__1700.0__warc"}
    # One file a partition keeps the files' own keys.
    assert [b.key for b in make_batches(TOP, 1)] == ["top-0.warc", "top-1.warc"]
    assert make_batches([], 1000) == []
    with pytest.raises(ValueError, match="at least 1"):
        make_batches(TOP, 0)


def _round_trip(storage: Storage) -> None:
    batches = make_batches([*SEGMENT_A, *SEGMENT_B, *TOP, shard("alone__only.warc")], files_per_partition=1000)
    commit_batches(storage, batches)
    assert batch_path(storage, "top-0.warc").endswith("/_batches/_/top-0.warc.json")
    assert not storage.exists(batch_path(storage, "alone__only.warc"))  # a batch of one has no list
    assert files_of(storage, [SEGMENT_A[0].key, "alone__only.warc"]) == {SEGMENT_A[0].key: [f.key for f in SEGMENT_A], "alone__only.warc": ["alone__only.warc"]}
    # A folder's lists only: the top folder's batch is not read for segment A.
    assert folder_batches(storage, [folder_of(SEGMENT_A[0].key)]) == [batches[0]]
    keys = [b.key for b in batches]
    assert batch_keys_of(storage, keys, ["top-1.warc", SEGMENT_B[2].key, "alone__only.warc", "unknown.warc"]) == {
        "top-1.warc": "top-0.warc",
        SEGMENT_B[2].key: SEGMENT_B[0].key,
        "alone__only.warc": "alone__only.warc",
    }
    # Which scanned files are registered: partitions, and files listed by a partition.
    everything = [f.key for f in [*SEGMENT_A, *SEGMENT_B, *TOP]] + ["alone__only.warc", "new.warc"]
    assert registered_files(storage, keys)(everything) == set(everything) - {"new.warc"}
    # A list whose key never reached Dagster (a crash in between) counts for nothing: its files are new again.
    assert registered_files(storage, ["alone__only.warc", SEGMENT_A[0].key])(everything) == {"alone__only.warc", *(f.key for f in SEGMENT_A)}
    # A later file of the same folder makes a new batch beside the first.
    later = make_batches([shard(f"CC-MAIN-2026-05__segments__1700.0__warc__f99{i}.warc.gz") for i in range(2)], 1000)
    commit_batches(storage, later)
    assert [b.key for b in folder_batches(storage, [folder_of(SEGMENT_A[0].key)])] == [SEGMENT_A[0].key, later[0].key]


def test_batches_committed_and_read_back_per_folder_locally(tmp_path):
    _round_trip(Storage(StorageSettings(root=str(tmp_path / "data"))))


def test_batches_committed_and_read_back_per_folder_on_s3(s3_endpoint):
    _round_trip(Storage(StorageSettings(root=f"s3://{BUCKET}/data", s3={"endpoint_url": s3_endpoint})))
