"""Real and deliberately broken image bytes for the filter tests, made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from PIL import Image
from skimage import data as skimage_data


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@cache
def photo(name: str = "chelsea", fmt: str = "JPEG") -> bytes:
    """A real photo from scikit-image's bundled samples."""
    return encode(Image.fromarray(getattr(skimage_data, name)()).convert("RGB"), fmt)


def solid(size: tuple[int, int], colour=(200, 30, 30), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, colour), fmt)


def noise(size: tuple[int, int], fmt: str = "PNG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), fmt)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(skimage_data.chelsea()).convert("CMYK"), "JPEG")


def palette_with_transparency() -> bytes:
    """A photo in palette mode whose colour 0 is transparent (becomes white)."""
    image = Image.fromarray(skimage_data.coffee()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(image, "PNG", transparency=0)


def rgba_half_transparent() -> bytes:
    pixels = np.array(Image.fromarray(skimage_data.astronaut()).convert("RGBA"))
    pixels[:, : pixels.shape[1] // 2, 3] = 0  # left half fully transparent
    return encode(Image.fromarray(pixels, "RGBA"), "PNG")


def gray16_gradient() -> bytes:
    """16-bit grayscale with values up to 65535 (I;16): must scale to 0..255, not clip."""
    ramp = np.tile(np.linspace(0, 65535, 400, dtype=np.uint16), (300, 1))
    return encode(Image.fromarray(ramp), "PNG")


def animated(fmt: str) -> bytes:
    """Two frames: a photo first, then solid blue; the first frame is the one used."""
    first = Image.fromarray(skimage_data.chelsea()).convert("RGB")
    second = Image.new("RGB", first.size, (0, 0, 255))
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"><rect width="300" height="200" fill="red"/></svg>'
