"""A synthetic, realistic WARC shard for the ingest benchmarks.

Pages are Japanese HTML of a few KB with 3-8 images each, assembled from the sentences,
titles and alt texts of the bundled sample pages, so every page differs in text and
URLs (no duplicate rejections, no unrealistically tiny pages). Some responses are real
JPEGs. Records go through the sample's deterministic ``ShardWriter`` (fixed ids and
dates), so a seed always gives the same bytes.

    python -m benchmarks.make_shard out.warc.gz --pages 2000
"""

from __future__ import annotations

import argparse
import html
import random
import re
from functools import lru_cache
from pathlib import Path

from lxml import etree
from lxml import html as lxml_html

from asagi_sample.site import PAGES, page_html, photo_jpeg
from asagi_sample.warcs import ShardWriter

PHOTOS = ("chelsea.png", "coffee.png", "horse.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")
HOSTS = ("nonbiri-nikki.example.jp", "science-sokuho.example.jp", "motoya.example.jp", "zukan.example.jp", "sakura-shoten.example.jp")
# (codec, how the charset is declared): mostly UTF-8, with the legacy Japanese codecs
# and undeclared pages real crawls also hold, so charset handling is part of the cost.
ENCODINGS = [("utf-8", "header")] * 14 + [("cp932", "meta")] * 3 + [("euc_jp", "meta")] * 2 + [("utf-8", "none")]
LABELS = {"utf-8": "UTF-8", "cp932": "Shift_JIS", "euc_jp": "EUC-JP"}


@lru_cache(maxsize=1)
def corpus() -> tuple[list[str], list[str], list[str]]:
    """Sentences, titles and alt texts of the sample pages."""
    sentences, titles, alts = [], [], []
    for file in sorted(p.name for p in PAGES.iterdir() if p.name.endswith(".html")):
        root = lxml_html.document_fromstring(page_html(file, "https://img.example.jp"))
        etree.strip_elements(root, "rt", "rp", with_tail=False)  # ruby readings would garble the text
        titles += [t.text_content().strip() for t in root.iter("title")]
        alts += [a for a in (img.get("alt") for img in root.iter("img")) if a and a.strip()]
        for block in root.iter("p", "li", "td", "figcaption", "h1", "h2"):
            for part in re.split(r"(?<=[。！？])", block.text_content()):
                if len(part.strip()) >= 8:
                    sentences.append(part.strip())
    return sentences, titles, alts


@lru_cache(maxsize=1)
def photos() -> list[bytes]:
    # Encoded once: JPEG encoding would otherwise dominate generation time.
    return [photo_jpeg(name, max_side=640) for name in PHOTOS]


def _paragraph(rng: random.Random, sentences: list[str], n: int, page: int) -> str:
    text = "".join(rng.choice(sentences) for _ in range(n))
    return f"<p>{html.escape(text)}（記事番号 {page}-{rng.randrange(10_000)}）</p>"


def _image(rng: random.Random, src: str, alt: str) -> str:
    """One of the markups pages really use for an image."""
    alt = html.escape(alt)
    style = rng.randrange(4)
    if style == 0:
        return f'<figure><img src="{src}" alt="{alt}" width="480"><figcaption>{alt}</figcaption></figure>'
    if style == 1:
        return f'<p><img src="{src}" alt="{alt}" loading="lazy"></p>'
    if style == 2:
        return f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="{src}" alt="{alt}" class="lazy">'
    return f'<a href="{src}"><img src="{src}" alt="{alt}" title="{alt}"></a>'


def page(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    """(page url, html, absolute image urls)."""
    sentences, titles, alts = corpus()
    host = rng.choice(HOSTS)
    url = f"https://{host}/{rng.choice(('posts', 'news', 'item', 'zukan'))}/{index:07d}.html"
    images = [f"https://{host}/images/{index:07d}/{k}.jpg" for k in range(rng.randint(3, 8))]
    title = html.escape(f"{rng.choice(titles)}（{index}）")
    body = [f'<header><nav><a href="/">ホーム</a> | <a href="/about">について</a></nav></header><article><h1>{title}</h1>']
    for k, src in enumerate(images):
        body += [_paragraph(rng, sentences, rng.randint(2, 4), index) for _ in range(rng.randint(1, 2))]
        relative = src.split(host, 1)[1] if k % 2 else src  # mix of absolute and relative src
        body.append(_image(rng, relative, rng.choice(alts)))
    body.append(_paragraph(rng, sentences, 3, index) + f"</article><footer>© {host}</footer>")
    doc = f'<!DOCTYPE html>\n<html lang="ja">\n<head>{{meta}}<title>{title}</title></head>\n<body>\n{"".join(body)}\n</body>\n</html>\n'
    return url, doc, images


def make_shard(path: str | Path, pages: int, seed: int = 0, images_every: int = 2) -> dict[str, int]:
    """Write ``pages`` pages (and one JPEG response every ``images_every`` pages) to a
    gzipped WARC at ``path``; returns counts of what was written.

    Streams: the writer's buffer is drained to the file after every page, so memory
    stays flat however large the shard.
    """
    rng = random.Random(seed)
    name = Path(path).name
    shard = ShardWriter(name, gzip=True)
    records = 1  # warcinfo
    images = 0
    with open(path, "wb") as out:
        for index in range(pages):
            url, doc, image_urls = page(rng, index)
            codec, declared = rng.choice(ENCODINGS)
            meta = f'<meta charset="{LABELS[codec]}">' if declared == "meta" else ""
            content_type = f"text/html; charset={LABELS[codec]}" if declared == "header" else "text/html"
            shard.fetch(url, doc.replace("{meta}", meta).encode(codec, "xmlcharrefreplace"), content_type)
            records += 2
            if index % images_every == 0:
                # The crawler captured one of the page's images too.
                shard.fetch(rng.choice(image_urls), rng.choice(photos()), "image/jpeg")
                records += 2
                images += 1
            out.write(shard.buffer.getvalue())
            shard.buffer.seek(0)
            shard.buffer.truncate()
        out.write(shard.buffer.getvalue())
    return {"records": records, "pages": pages, "images": images, "bytes": Path(path).stat().st_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images-every", type=int, default=2)
    args = parser.parse_args()
    print(make_shard(args.path, args.pages, args.seed, args.images_every))
