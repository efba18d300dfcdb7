"""Untrusted image bytes -> facts for the pair rules, or a reason they cannot be used.

The header gives format and size without decoding (Pillow's ``Image.open`` reads only
the header), so the size rules and the decompression-bomb limit cost almost nothing.
Pixels are decoded once, small: JPEG decodes at 1/2..1/8 scale through ``draft``, and
everything else is reduced right after decoding. That one small RGB image feeds the
single-colour check and the perceptual hash.
"""

from __future__ import annotations

import io
import warnings

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from asagi_dagster.core import Rejected
from asagi_dagster.filters.settings import ImageSafetySettings
from asagi_dagster.pair_rules import ImageHeader

# Pillow warns on images over its own pixel limit (and raises at twice that); our
# max_pixels, lower, decides first, so its warning would only be noise in the logs.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def read_header(data: bytes, safety: ImageSafetySettings) -> tuple[Image.Image, ImageHeader]:
    """Open without decoding pixels; raises Rejected for what no rule should see."""
    if _looks_like_svg(data):
        raise Rejected("unsupported_image_format", "SVG (vector images are not decoded)")
    try:
        image = Image.open(io.BytesIO(data), formats=safety.formats)
    except UnidentifiedImageError:
        if _has_image_magic(data):  # an image format we know, with a header that does not parse
            raise Rejected("corrupt_image", f"unreadable header (starts {data[:8]!r})") from None
        raise Rejected("unsupported_image_format", f"not one of {', '.join(safety.formats)} (starts {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        raise Rejected("decompression_bomb", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on crafted headers
        raise Rejected("corrupt_image", f"{type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise Rejected("corrupt_image", f"header size {width}x{height}")
    if width * height > safety.max_pixels:
        raise Rejected("decompression_bomb", f"{width}x{height} = {width * height} pixels > {safety.max_pixels}")
    # is_animated looks for a second frame only; n_frames would walk every frame of a GIF.
    header = ImageHeader(image.format or "", width, height, image.mode, getattr(image, "is_animated", False))
    return image, header


def decode_small(image: Image.Image, side: int) -> Image.Image:
    """The first frame as an RGB image at most about ``side`` pixels on its long side.

    Raises Rejected("corrupt_image") for truncated or undecodable data.
    """
    try:
        if image.format == "JPEG":
            image.draft("RGB", (side, side))  # decode at the smallest scale still >= side
        image.seek(0)
        image.load()
        rgb = to_rgb(image)
        rgb.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return rgb
    except Exception as exc:  # noqa: BLE001 - truncated data, broken streams, plugin bugs: one image, not the shard
        raise Rejected("corrupt_image", f"{type(exc).__name__}: {exc}") from None


def small_image(data: bytes, side: int, safety: ImageSafetySettings) -> Image.Image:
    """Bytes to an RGB image of at most about ``side`` pixels, with the same safety rules
    as screening (for encoders and scorers)."""
    image, _ = read_header(data, safety)
    return decode_small(image, side)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB whatever the stored mode: transparency lands on white, 16-bit scales down."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert clips these to 0..255 instead of scaling.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def colour_spread(small: Image.Image) -> float:
    """The largest per-channel standard deviation: near 0 for a single-colour image."""
    # Band by band: numpy's strided std over an (N, 3) array is several times slower.
    return max(float(np.asarray(band, dtype=np.float32).std()) for band in small.split())


def perceptual_hash(small: Image.Image) -> int:
    """64-bit DCT hash (imagehash.phash) as a signed int64, for Parquet and DuckDB's xor."""
    bits = imagehash.phash(small).hash.flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in head)


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _has_image_magic(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
