"""What a file of a batch costs the ingest steps when it holds nothing (D111, issue 22 §1):
one ``web_ingest`` run in process over one partition of N empty inbox files, against
one file per partition run N times (each run is then its own fixed cost). Empty files,
so what is measured is the per-file bookkeeping (manifests, catalog entries, recounts,
event-log writes), the part that does not shrink with the data. Printed: seconds per
file each way and their ratio, side by side in one invocation.

    python -m benchmarks.bench_batch_cost [--files 100] [--single 10]

To compare two versions of the code, run it from each checkout one after the other.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.bench_scale import deployment, write_inbox


def one_batch(files: int, files_per_partition: int) -> tuple[float, int]:
    """Seconds to ingest ``files`` empty files in partitions of ``files_per_partition``,
    one in-process run a partition; and the runs."""
    import dagster as dg

    from asagi_dagster.config import load_config
    from asagi_dagster.definitions import build_definitions
    from asagi_sample.site import write_filter_sample

    with deployment("sqlite", None, web={"files_per_partition": files_per_partition}) as (base, profile):
        write_filter_sample(load_config(profile).filters)
        write_inbox(base / "inbox", 0, files)
        defs = build_definitions(str(profile))
        with dg.instance_for_test() as instance:
            with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
                defs.resolve_sensor_def("warc_inbox_sensor")(context)
            partitions = instance.get_dynamic_partitions("warc_shards")
            job = defs.resolve_job_def("web_ingest")
            start = time.perf_counter()
            for partition in partitions:
                assert job.execute_in_process(instance=instance, partition_key=partition).success
            return time.perf_counter() - start, len(partitions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="empty files in the batch")
    parser.add_argument("--single", type=int, default=10, help="empty files run one a partition (each its own run)")
    args = parser.parse_args()
    one_batch(1, 1)  # warm: imports and first connections, paid once by a run worker too, not by a file
    batched, _ = one_batch(args.files, args.files)
    single, runs = one_batch(args.single, 1)
    per_batched, per_single = batched / args.files, single / args.single
    print(f"\n## {args.files} empty files in one partition vs one a partition (web_ingest in process)\n")
    print("| partitions | files | runs | seconds | per file |\n|---|---|---|---|---|")
    print(f"| one of {args.files} files | {args.files} | 1 | {batched:.1f} s | {per_batched * 1000:.0f} ms |")
    print(f"| one a file | {args.single} | {runs} | {single:.1f} s | {per_single * 1000:.0f} ms |")
    print(f"\na file costs {per_single / per_batched:.1f}x less in a batch of {args.files} than in a partition of its own")


if __name__ == "__main__":
    main()
