"""The whole web ingest against a real S3 endpoint: moto in server mode on 127.0.0.1.

Inbox, storage root, manifests and the DuckDB report all live in the bucket.
"""

from __future__ import annotations

import boto3
import dagster as dg

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_dagster.report import shard_report
from asagi_dagster.storage import S3Settings, Storage
from asagi_dagster.web.inbox import Inbox
from asagi_sample.site import build_shards, write_sample
from tests.conftest import BUCKET, write_profile


def test_web_ingest_end_to_end_on_s3(tmp_path, s3_endpoint, image_server, served_dir):
    profile = write_profile(
        tmp_path,
        storage={"root": f"s3://{BUCKET}/data", "s3": {"endpoint_url": s3_endpoint}, "duckdb_path": None},
        sources={"web": {"inbox": f"s3://{BUCKET}/inbox"}},
    )
    config = load_config(profile)
    write_sample(tmp_path / "unused-inbox", served_dir, image_server)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for name, data in build_shards(image_server).items():
        client.put_object(Bucket=BUCKET, Key=f"inbox/{name}", Body=data)

    defs = build_definitions(str(profile))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", ["sample-00000.warc.gz"])
        result = defs.resolve_job_def("web_ingest").execute_in_process(instance=instance, partition_key="sample-00000.warc.gz")
        assert result.success
        checks = result.get_asset_check_evaluations()
        # rows_accounted on each of the six outputs, and record_starts_accounted on web_documents
        assert len(checks) == 7 and all(c.passed for c in checks)

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="data/")["Contents"]}
    for asset in ("web_documents", "web_images", "image_text_pairs", "interleaved_documents", "pair_images", "screened_pairs"):
        assert f"data/{asset}/sample-00000.warc.gz/data.parquet" in keys
        assert f"data/{asset}/sample-00000.warc.gz/_manifest.json" in keys
        assert f"data/rejections/{asset}/sample-00000.warc.gz/data.parquet" in keys

    report = {(r["asset"], r["partition"]): r for r in shard_report(Storage(config.storage), None)}
    pairs = report[("pair_images", "sample-00000.warc.gz")]
    assert pairs["rows_out"] == 9
    assert pairs["rejected_by_reason"] == {"robots_disallowed": 1}
    assert report[("screened_pairs", "sample-00000.warc.gz")]["rows_out"] == 5
    docs = report[("web_documents", "sample-00000.warc.gz")]
    assert docs["rows_in"] == docs["rows_out"] + docs["rows_rejected"]


def test_an_s3_inbox_listed_in_windows_is_the_whole_listing(s3_endpoint):
    """Windows of the listing, each going on after the last (StartAfter, pages of at most
    1,000 keys), give the files and fingerprints of one whole scan; objects that are not
    shards count toward a window too, so a prefix full of other files cannot make one
    tick list it all; a bad name is reported in the window that lists it."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    logs = [f"logs/fetch-{i:04d}.txt" for i in range(1_500)]  # listed before every shard
    shards = [f"segments/{i % 3}/warc/crawl-{i:04d}.warc.gz" for i in range(2_503)] + ["segments/1/warc/bad__name.warc.gz"]
    for name in logs + shards + ["segments/1/notes.txt"]:
        client.put_object(Bucket=BUCKET, Key=f"windowed-inbox/{name}", Body=name.encode())  # moto keeps buckets across tests
    inbox = Inbox(f"s3://{BUCKET}/windowed-inbox", S3Settings(endpoint_url=s3_endpoint))
    whole, whole_skipped = inbox.scan()
    windows, after = [], ""
    while True:
        window = inbox.scan_window(after, 1_200)
        windows.append(window)
        after = window.last
        if not after:
            break
    assert len(windows) == 4  # 4,005 objects, 1,200 a window
    assert windows[0].shards == [] and windows[0].last == logs[1_199]
    assert [s for w in windows for s in w.shards] == whole and [s for w in windows for s in w.skipped] == whole_skipped
    assert [s.path for s in whole_skipped] == ["segments/1/warc/bad__name.warc.gz"]
