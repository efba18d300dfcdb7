"""Document-like images for the document-image filter's reference set: rendered text
pages, bar charts and flow diagrams (the kinds InfographicVQA, DVQA and AI2D hold),
plus scikit-image's scanned book page. Deterministic for a seed."""

from __future__ import annotations

import random
from importlib import resources

from PIL import Image, ImageDraw, ImageFont

WORDS = ("data", "model", "chart", "revenue", "2024", "table", "report", "figure", "growth", "total", "share", "index")
COLOURS = ("#4472c4", "#ed7d31", "#a5a5a5", "#70ad47")


def text_page(seed: int, size: tuple[int, int] = (480, 640)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    for y in range(30, size[1] - 40, 22):
        draw.text((30, y), " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9))), fill="black", font=font)
    return image


def bar_chart(seed: int, size: tuple[int, int] = (560, 400)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    base = size[1] - 50
    draw.line((50, base, size[0] - 30, base), fill="black", width=2)
    draw.line((50, 30, 50, base), fill="black", width=2)
    for i in range(6):
        height = rng.randint(40, base - 50)
        draw.rectangle((70 + i * 75, base - height, 120 + i * 75, base), fill=rng.choice(COLOURS))
        draw.text((75 + i * 75, base + 10), f"Q{i + 1}", fill="black", font=font)
    return image


def flow_diagram(seed: int, size: tuple[int, int] = (500, 400)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    top = rng.randint(80, 220)
    for i in range(4):
        x = 30 + i * 115
        draw.rectangle((x, top, x + 90, top + 60), outline="black", width=2)
        draw.text((x + 10, top + 20), f"{rng.choice(WORDS)} {i + 1}", fill="black", font=font)
        if i < 3:
            draw.line((x + 90, top + 30, x + 115, top + 30), fill="black", width=2)
    return image


def scanned_page() -> Image.Image:
    with resources.as_file(resources.files("skimage") / "data" / "page.png") as path:
        return Image.open(path).convert("RGB")


def reference_documents() -> dict[str, Image.Image]:
    """File name -> image: the embedded default's document reference set."""
    images = {"scanned-page.png": scanned_page()}
    for seed in range(3):
        images[f"text-page-{seed}.png"] = text_page(seed)
        images[f"bar-chart-{seed}.png"] = bar_chart(seed)
        images[f"flow-diagram-{seed}.png"] = flow_diagram(seed)
    return images
