"""A WARC written by another crawler: GNU Wget (Debian's) crawls the sample pages and
photos from a real HTTP server on loopback, and ingest must account for every record it
wrote. The count to compare with is made with Python's zlib, member by member, not by
the code under test."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

from lxml import html as lxml_html

from asagi_sample.site import page_html, served_images
from tests.web.test_ingest import rejections, rows, run_ingest
from tests.web.test_warc_damage import starts_check

# file, codec, as the sample shards encode them (none of them declared in a header here:
# Python's server sends plain text/html, as many real servers do)
PAGES = [("blog.html", "utf-8"), ("news.html", "euc_jp"), ("shop.html", "cp932"), ("ruby.html", "utf-8"), ("iso2022.html", "iso2022_jp")]


def gzip_members(data: bytes) -> int:
    count = 0
    while data:
        inflater = zlib.decompressobj(31)
        inflater.decompress(data)
        data = inflater.unused_data
        count += 1
    return count


def test_a_wget_crawl_is_read_whole(storage, config, tmp_path, served_dir, image_server):
    for rel, body in served_images().items():
        (served_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (served_dir / rel).write_bytes(body)
    texts = {}
    for file, codec in PAGES:
        html = page_html(file, image_server)
        (served_dir / file).write_bytes(html.encode(codec))
        texts[f"{image_server}/{file}"] = lxml_html.document_fromstring(html).findtext(".//title").strip()
    links = "".join(f'<a href="{file}">{file}</a>' for file, _ in PAGES)
    (served_dir / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")

    warc = tmp_path / "wget-crawl"
    # -p fetches each page's images, as a crawler that captures requisites does.
    subprocess.run(
        [
            "wget",
            "-q",
            "-r",
            "-l",
            "1",
            "-p",
            "-e",
            "robots=off",
            "--no-host-directories",
            "-P",
            str(tmp_path / "mirror"),
            f"--warc-file={warc}",
            f"{image_server}/index.html",
        ],
        check=False,
        timeout=120,  # exit code 8 when an image the pages name is missing: real crawls have those
    )
    data = Path(f"{warc}.warc.gz").read_bytes()
    manifests = run_ingest(storage, config, tmp_path, "wget-crawl.warc.gz", data)
    check = starts_check(storage, manifests)
    assert check["passed"] and check["record_starts"] == gzip_members(data), check
    assert "corrupt_warc" not in {r["reason"] for r in rejections(storage, manifests["web_documents"])}
    titles = {
        r["url"]: lxml_html.document_fromstring(r["html"]).findtext(".//title").strip() for r in rows(storage, manifests["web_documents"]) if r["url"] in texts
    }
    assert titles == texts  # every page, in every charset, decoded exactly
    captured = {r["url"] for r in rows(storage, manifests["web_images"])}
    assert len(captured) >= 5 and all(url.startswith(image_server) for url in captured)
    pages = {r["page_url"] for r in rows(storage, manifests["image_text_pairs"])}
    assert set(texts) <= pages
