"""The sample's files: scikit-image photos as PNG bytes, written only when changed
(atomically, so a reader never sees half a file)."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

from PIL import Image


def skimage_photo(name: str, side: int) -> Image.Image:
    """One of scikit-image's sample photos, scaled to fit ``side``."""
    with resources.as_file(resources.files("skimage") / "data" / name) as path:
        image = Image.open(path).convert("RGB")
    image.thumbnail((side, side))
    return image


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
