"""Where the web ingest spends its time: each part of bench_ingest_rate's "ours" timed
alone on the same kind of shard, beside bare warcio + lxml, in one process (wall
seconds, median of the rounds). It has no target: it says which part a change to the
rate should look at.

    python -m benchmarks.bench_ingest_phases [--pages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from lxml import html as lxml_html

from asagi_dagster.storage import StageWriter, Storage, StorageSettings
from asagi_dagster.web import schemas
from asagi_dagster.web.charset import decode_html
from asagi_dagster.web.html import parse_page
from asagi_dagster.web.ingest import extract_pages, ingest_warc
from asagi_dagster.web.settings import WebSourceSettings
from asagi_dagster.web.warc import WarcRecord, iter_warc
from asagi_dagster.web.warc_starts import scan_record_starts
from benchmarks.bench_ingest_rate import run_bare
from benchmarks.make_shard import make_shard


def median_seconds(run, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="seconds per part of the web ingest")
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        path = Path(tmp) / "bench-00000.warc.gz"
        make_shard(path, args.pages)
        os.sync()
        open_shard = lambda: open(path, "rb")  # noqa: E731
        storage = Storage(StorageSettings(root=str(Path(tmp) / "storage")))
        web = WebSourceSettings(inbox=tmp)
        pages = [
            r for r in iter_warc(open_shard, path.name, 10 << 20) if isinstance(r, WarcRecord) and r.payload and (r.content_type or "").startswith("text/html")
        ]
        htmls = [decode_html(r.payload, r.content_type).text.encode() for r in pages]

        def ingest():
            with (
                StageWriter(storage, "web_documents", path.name, schemas.WEB_DOCUMENTS, 1) as docs,
                StageWriter(storage, "web_images", path.name, schemas.WEB_IMAGES, 1) as images,
            ):
                ingest_warc(open_shard, path.name, docs, images, web)
            return docs.manifest

        documents = ingest()

        def extract():
            with (
                StageWriter(storage, "image_text_pairs", path.name, schemas.IMAGE_TEXT_PAIRS, 1) as pairs,
                StageWriter(storage, "interleaved_documents", path.name, schemas.INTERLEAVED_DOCUMENTS, 1) as inter,
            ):
                extract_pages(storage, documents.data_url, pairs, inter, web.html)

        parts = {
            "record-start scan": lambda: scan_record_starts(open_shard),
            "reading (iter_warc)": lambda: sum(1 for _ in iter_warc(open_shard, path.name, 10 << 20)),
            "charset decoding": lambda: [decode_html(r.payload, r.content_type) for r in pages],
            "ingest_warc (all of it)": ingest,
            "parse_page": lambda: [parse_page(h, "https://bench.example.jp/", 1000) for h in htmls],
            "lxml parse alone": lambda: [lxml_html.document_fromstring(r.payload) for r in pages],
            "extract_pages (all of it)": extract,
            "bare warcio + lxml": lambda: run_bare(path),
        }
        for name, run in parts.items():
            print(f"{name:28s} {median_seconds(run, args.rounds):6.3f} s")


if __name__ == "__main__":
    main()
