"""The embedded default's sample: a few Japanese web pages written for this project,
with real photos (scikit-image's bundled samples), packed into WARC shards. Some
images sit inside the WARCs; the rest are served by ``server.py`` on loopback, with a
robots.txt, a redirect, a ``noai`` image and a missing one, so every path of the
ingest runs on it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image

from asagi_dagster.datasets import DatasetSource
from asagi_dagster.filters.settings import FilterSettings
from asagi_sample.benchmarks import write_decontamination_sample
from asagi_sample.documents import bar_chart, reference_documents
from asagi_sample.files import png_bytes, skimage_photo, write_if_changed
from asagi_sample.warcs import ShardWriter

PAGES = resources.files("asagi_sample") / "pages"

# Served by the loopback image server: path -> scikit-image sample.
SERVED_IMAGES = {
    "img/rocket.jpg": "rocket.jpg",
    "img/astronaut.jpg": "astronaut.png",
    "img/motorcycle.jpg": "motorcycle_left.png",
    "img/coins.jpg": "coins.png",
    "noai/clock.jpg": "clock_motion.png",
    "private/press-room.jpg": "camera.png",
    "logo.jpg": "logo.png",
}
# Captured inside the WARC shards: URL -> scikit-image sample.
WARC_IMAGES = {
    "https://nonbiri-nikki.example.jp/images/2024/05/chelsea.jpg": "chelsea.png",
    "https://nonbiri-nikki.example.jp/posts/images/2024/05/coffee.jpg": "coffee.png",
    "https://zukan.example.jp/zukan/horse.jpg": "horse.png",
    "http://sakura-shoten.example.jp/photos/store.jpg": "hubble_deep_field.jpg",
    "http://sakura-shoten.example.jp/photos/camera.jpg": "camera.png",
}
ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"


@dataclass(frozen=True)
class SamplePage:
    file: str
    url: str
    encoding: str
    declare_in_header: bool  # charset in the HTTP Content-Type header or not


def photo_jpeg(name: str, max_side: int = 480) -> bytes:
    """A scikit-image sample photo as a JPEG, resized (deterministic bytes)."""
    with resources.as_file(resources.files("skimage") / "data" / name) as path:
        image = Image.open(path).convert("RGB")
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _crop_jpeg(name: str, box: tuple[int, int, int, int]) -> bytes:
    with resources.as_file(resources.files("skimage") / "data" / name) as path:
        image = Image.open(path).convert("RGB").crop(box)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def served_images() -> dict[str, bytes]:
    """Served path -> bytes: the photos, plus the images a real page also has that the
    filters exist for (a banner, an icon, a placeholder, a chart)."""
    images = {rel: photo_jpeg(source) for rel, source in SERVED_IMAGES.items()}
    images["img/latte.jpg"] = photo_jpeg("coffee.png", max_side=400)
    images["img/banner-sale.jpg"] = _crop_jpeg("astronaut.png", (0, 150, 480, 270))  # 4:1
    images["img/placeholder.png"] = png_bytes(Image.new("RGB", (320, 240), (228, 228, 228)))
    images["img/launch-chart.png"] = png_bytes(bar_chart(11))  # a chart: the document-image filter's case
    with resources.as_file(resources.files("skimage") / "data" / "logo.png") as path:
        images["img/icon-share.png"] = png_bytes(Image.open(path).convert("RGBA").resize((48, 48)))
    return images


def page_texts() -> list[str]:
    """The text of every bundled page (for training the tiny models' tokenizers)."""
    from lxml import html as lxml_html

    texts = []
    for file in sorted(p.name for p in PAGES.iterdir() if p.name.endswith(".html")):
        texts += [line.strip() for line in lxml_html.document_fromstring(page_html(file, "http://x")).text_content().splitlines() if line.strip()]
    return texts


def page_html(file: str, images_base: str) -> str:
    host = images_base.split("://", 1)[1]
    return (PAGES / file).read_text(encoding="utf-8").replace("{IMAGES}", images_base).replace("{IMAGES_HOST}", host)


def build_shards(images_base: str) -> dict[str, bytes]:
    """Shard file name -> WARC bytes. ``images_base`` is the image server's URL."""
    pages = [
        SamplePage("blog.html", "https://nonbiri-nikki.example.jp/posts/2024-05-12.html", "utf-8", True),
        SamplePage("news.html", "https://science-sokuho.example.jp/news/20240512.html", "euc_jp", False),
        SamplePage("shop.html", f"{images_base}/shop/index.html", "cp932", False),
        SamplePage("ruby.html", "https://zukan.example.jp/uma.html", "utf-8", False),
        SamplePage("broken.html", "http://sakura-shoten.example.jp/news/closing.html", "utf-8", True),
        SamplePage("iso2022.html", f"{images_base}/mail/notice.html", "iso2022_jp", False),
    ]

    def add_page(shard: ShardWriter, page: SamplePage) -> None:
        body = page_html(page.file, images_base).encode(page.encoding)
        content_type = f"text/html; charset={_label(page.encoding)}" if page.declare_in_header else "text/html"
        shard.fetch(page.url, body, content_type)

    def add_images(shard: ShardWriter, urls: list[str]) -> None:
        for url in urls:
            shard.fetch(url, photo_jpeg(WARC_IMAGES[url]), "image/jpeg")

    first = ShardWriter("sample-00000.warc.gz")
    add_page(first, pages[0])
    add_images(first, [u for u in WARC_IMAGES if "nonbiri" in u])
    add_page(first, pages[1])

    second = ShardWriter("sample-00001.warc.gz")
    add_page(second, pages[2])
    add_page(second, pages[3])
    add_images(second, [u for u in WARC_IMAGES if "zukan" in u])

    # An uncompressed shard with the kinds of records a real crawl also holds.
    third = ShardWriter("sample-00002.warc", gzip=False)
    add_page(third, pages[4])
    add_images(third, [u for u in WARC_IMAGES if "sakura" in u])
    add_page(third, pages[5])
    third.fetch("http://sakura-shoten.example.jp/old-page.html", b"<html><body>Not Found</body></html>", "text/html", status="404 Not Found")
    third.fetch("http://sakura-shoten.example.jp/flyer.pdf", b"%PDF-1.4\n% sample\n", "application/pdf")
    third.revisit("http://sakura-shoten.example.jp/news/closing.html")
    return {s.name: s.getvalue() for s in (first, second, third)}


def write_sample(inbox: Path, served_dir: Path, images_base: str) -> list[Path]:
    """Write the shards into the inbox and the served images into ``served_dir``.

    A file is rewritten only when its bytes change, so re-running leaves the inbox's
    fingerprints, and so the re-sync schedule, untouched.
    """
    written = []
    for name, data in build_shards(images_base).items():
        if write_if_changed(inbox / name, data):
            written.append(inbox / name)
    for rel, data in served_images().items():
        write_if_changed(served_dir / rel, data)
    write_if_changed(served_dir / "robots.txt", ROBOTS_TXT.encode())
    return written


def write_filter_sample(filters: FilterSettings) -> list[Path]:
    """Fill the profile's document-reference folder with the sample's rendered documents,
    and the paths of the benchmarks it names for decontamination with the benchmark
    stand-ins; returns the files written."""
    written = write_decontamination_sample(filters.decontamination.benchmarks)
    folder = filters.document_filter.reference_images
    if folder:
        for name, image in reference_documents().items():
            if write_if_changed(Path(folder) / name, png_bytes(image)):
                written.append(Path(folder) / name)
    return written


# Stand-in open datasets (imagefolder layout: images plus metadata.jsonl), each written
# when the profile lists it under its name:
# - sample-captions (for STAIR / YJ Captions): captions of scikit-image photos, one of
#   them the blog's cat photo at another size (a near duplicate across sources), two
#   captions of one photo, and the broken rows real datasets have;
# - sample-captions-en and sample-vqa-en (for the English caption and VQA sets Asagi
#   translates): other photos, so cross-source dedup keeps them.
SAMPLE_DATASETS = {
    "sample-captions": (
        [
            {"file_name": "cat.png", "image_id": "img-1", "caption": "窓辺で外を眺める茶トラの猫"},
            {"file_name": "astronaut.png", "image_id": "img-2", "caption": "宇宙服を着て微笑む飛行士"},
            {"file_name": "astronaut.png", "image_id": "img-2", "caption": "星条旗の前に立つ宇宙飛行士の写真"},
            {"file_name": "coffee.png", "image_id": "img-3", "caption": ""},
            {"file_name": "missing.png", "image_id": "img-4", "caption": "見つからない画像の説明"},
            {"file_name": "motorcycle.png", "image_id": "img-5", "caption": "赤いオートバイの側面写真"},
        ],
        {
            "cat.png": ("chelsea.png", 360),
            "astronaut.png": ("astronaut.png", 400),
            "coffee.png": ("coffee.png", 400),
            "motorcycle.png": ("motorcycle_left.png", 420),
        },
    ),
    "sample-captions-en": (
        [
            {"file_name": "galaxies.png", "caption": "A deep-space photograph full of small galaxies of many colours on a black background."},
            {"file_name": "retina.png", "caption": "A photograph of the back of a human eye, with the optic disc and branching blood vessels."},
            {"file_name": "tissue.png", "caption": "A microscope image of a stained tissue sample, with brown and blue cells."},
        ],
        {"galaxies.png": ("hubble_deep_field.jpg", 400), "retina.png": ("retina.jpg", 400), "tissue.png": ("ihc.png", 360)},
    ),
    "sample-vqa-en": (
        [
            {"file_name": "colours.png", "image_id": "vqa-1", "question": "What does the picture show?", "answer": "Overlapping circles of many colours."},
            {"file_name": "horse.png", "image_id": "vqa-2", "question": "What animal is shown in silhouette?", "answer": "A horse."},
            {"file_name": "horse.png", "image_id": "vqa-2", "question": "Is the animal standing or running?", "answer": "It is walking."},
        ],
        {"colours.png": ("color.png", 370), "horse.png": ("horse.png", 400)},
    ),
}


def write_dataset_sample(datasets: dict[str, DatasetSource]) -> list[Path]:
    """Fill the folder of each stand-in dataset the profile lists; returns the files written."""
    written = []
    for name, (rows, images) in SAMPLE_DATASETS.items():
        source = datasets.get(name)
        if source is None or source.format != "imagefolder" or not source.path:
            continue
        folder = Path(source.path)
        for file, (photo, side) in images.items():
            if write_if_changed(folder / file, png_bytes(skimage_photo(photo, side))):
                written.append(folder / file)
        metadata = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
        if write_if_changed(folder / "metadata.jsonl", metadata):
            written.append(folder / "metadata.jsonl")
    return written


def _label(codec: str) -> str:
    return {"utf-8": "UTF-8", "euc_jp": "EUC-JP", "cp932": "Shift_JIS", "iso2022_jp": "ISO-2022-JP"}[codec]
