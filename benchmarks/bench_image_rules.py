"""Image stage speed, two ratios measured side by side on the same in-memory files.

1. Rule checks (image safety + size + aspect, from the header) versus bare Pillow header
   reads, ``Image.open(f).size``. Target (issue "filtered splits"): at least 0.5x.
2. The whole image stage (header rules, then one small decode for the single-colour
   rule and the perceptual hash) versus a naive stage that fully decodes every image
   first and runs the same rules and hash on the full-size pixels. Target: at least 3x.

The files are a web-like mix made from scikit-image's real photos: JPEG photos from
480 to 1600 px, some PNGs, and the icons, banners and huge images the rules reject.

    python -m benchmarks.bench_image_rules [--images N] [--rounds R]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import imagehash
from PIL import Image, ImageStat
from skimage import data as skimage_data

from asagi_dagster.core import Rejected
from asagi_dagster.filters.rules import PairScreen
from asagi_dagster.filters.settings import FilterSettings

RULES_TARGET = 0.5
STAGE_TARGET = 3.0
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "cat")


def make_images(count: int) -> list[bytes]:
    """A repeatable web-like mix: 70% JPEG photos, 10% PNG photos, 20% ruled out by the header."""
    photos = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage_data, name)())
        photos.append(image.convert("RGB"))
    files = []
    for i in range(count):
        photo = photos[i % len(photos)]
        kind = i % 10
        if kind < 7:
            side = (480, 800, 1200, 1600)[i % 4]
            files.append(_encode(_resized(photo, side), "JPEG", quality=85))
        elif kind == 7:
            files.append(_encode(_resized(photo, 640), "PNG"))
        elif kind == 8:
            files.append(_encode(_resized(photo, 64), "PNG"))  # an icon: too small
        else:
            files.append(_encode(photo.resize((2400, 600)), "JPEG", quality=85))  # a banner: too large and too wide
    return files


def _resized(image: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def bare_headers(files: list[bytes]) -> int:
    return sum(Image.open(io.BytesIO(data)).size[0] > 0 for data in files)


def our_header_rules(files: list[bytes], screen: PairScreen) -> int:
    kept = 0
    for data in files:
        try:
            screen.check_header(data)
            kept += 1
        except Rejected:
            pass
    return kept


def our_image_stage(files: list[bytes], screen: PairScreen) -> int:
    kept = 0
    for data in files:
        try:
            screen.check_pixels(*screen.check_header(data))
            kept += 1
        except Rejected:
            pass
    return kept


def naive_image_stage(files: list[bytes], settings: FilterSettings) -> int:
    """Decode everything at full size first, then the same rules and hash."""
    size, aspect, monochrome = (settings.rules[name] for name in ("image_size", "aspect_ratio", "monochrome"))
    kept = 0
    for data in files:
        image = Image.open(io.BytesIO(data))
        image.load()
        rgb = image.convert("RGB")
        short, long = sorted(rgb.size)
        if short <= size.min_side or long >= size.max_side or long / short > aspect.max_ratio:
            continue
        if max(ImageStat.Stat(rgb).stddev) <= monochrome.max_std:
            continue
        imagehash.phash(rgb)
        kept += 1
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description="image rule checks and the image stage versus bare and naive Pillow")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = FilterSettings()
    screen = PairScreen(settings)  # built once per shard in the asset (it compiles HojiChar's lists)
    files = make_images(args.images)
    print(f"images: {len(files)}, {sum(map(len, files)) / 2**20:.1f} MiB")

    pairs = {
        "rule checks vs bare header reads": (lambda: our_header_rules(files, screen), lambda: bare_headers(files), RULES_TARGET),
        "image stage vs naive full decode": (lambda: our_image_stage(files, screen), lambda: naive_image_stage(files, settings), STAGE_TARGET),
    }
    failed = False
    for name, (ours, baseline, target) in pairs.items():
        ratios = []
        for round_ in range(args.rounds):
            times = {}
            order = (("ours", ours), ("baseline", baseline)) if round_ % 2 == 0 else (("baseline", baseline), ("ours", ours))
            for label, run in order:
                start = time.perf_counter()
                run()
                times[label] = time.perf_counter() - start
            ratios.append(times["baseline"] / times["ours"])  # rate ratio: ours/baseline in images per second
            print(
                f"{name}, round {round_ + 1}: ours {len(files) / times['ours']:,.0f} images/s, "
                f"baseline {len(files) / times['baseline']:,.0f} images/s, ratio {ratios[-1]:.2f}x"
            )
        ratio = statistics.median(ratios)
        verdict = "PASS" if ratio >= target else "FAIL"
        failed |= ratio < target
        print(f"{name}: median ratio of {args.rounds} rounds {ratio:.2f}x  target: at least {target}x  -> {verdict}")
    # Same decisions both ways, so the speed is not bought by skipping work.
    assert our_image_stage(files, PairScreen(settings)) == naive_image_stage(files, settings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
