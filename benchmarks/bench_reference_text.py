"""Reference-text extraction speed: our page -> sentences step versus bare
``trafilatura.extract`` on the same pages, side by side in one run.

Target (issue "filtered splits"): ours at least 0.9x the bare rate. Ours is the same
trafilatura call with our configuration (a lower MIN_EXTRACTED_SIZE, so short pages
are not flattened), plus the Japanese sentence split.

Pages: the benchmark shard generator's Japanese pages (1-6 KB, 3-8 images each) and
the sample's six pages.

    python -m benchmarks.bench_reference_text [--pages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import trafilatura

from asagi_dagster.reference.extract import extraction_config, page_sentences
from asagi_dagster.reference.settings import ReferenceTextSettings
from asagi_sample.site import PAGES, page_html
from benchmarks.make_shard import page

TARGET = 0.9


def make_pages(count: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    pages = [page(rng, index)[:2] for index in range(count)]
    pages = [(url, doc.replace("{meta}", "")) for url, doc in pages]
    samples = sorted(p.name for p in PAGES.iterdir() if p.name.endswith(".html"))
    return pages + [(f"https://example.jp/{name}", page_html(name, "https://img.example.jp")) for name in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description="reference-text extraction versus bare trafilatura.extract")
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pages = make_pages(args.pages)
    settings = ReferenceTextSettings()
    config = extraction_config(settings)

    def ours() -> int:
        return sum(len(page_sentences(html, url, settings, config)) for url, html in pages)

    def bare() -> int:
        return sum(bool(trafilatura.extract(html, url=url)) for url, html in pages)

    print(f"pages: {len(pages)}")
    ratios = []
    for round_ in range(args.rounds):
        times = {}
        for name, run in (("ours", ours), ("bare", bare)) if round_ % 2 == 0 else (("bare", bare), ("ours", ours)):
            start = time.perf_counter()
            result = run()
            times[name] = time.perf_counter() - start
            if name == "ours":
                sentences = result
        ratios.append(times["bare"] / times["ours"])
        print(
            f"round {round_ + 1}: ours {len(pages) / times['ours']:,.0f} pages/s ({sentences} sentences), "
            f"bare {len(pages) / times['bare']:,.0f} pages/s, ratio {ratios[-1]:.2f}x"
        )
    ratio = statistics.median(ratios)
    print(f"ratio ours/bare, median of {args.rounds} rounds: {ratio:.2f}x  target: at least {TARGET}x  -> {'PASS' if ratio >= TARGET else 'FAIL'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
