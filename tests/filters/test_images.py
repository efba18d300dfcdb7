"""Image safety and the pair rules on real and broken image bytes: each case a clear
reason or a correct conversion, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from asagi_dagster.core import Rejected
from asagi_dagster.filters.images import decode_small, hamming, perceptual_hash, read_header, small_image
from asagi_dagster.filters.rules import PairScreen
from asagi_dagster.filters.settings import FilterSettings, ImageSafetySettings
from tests.filters import images

CAPTION = "縁側で昼寝をする猫"


def decode_rgb(data: bytes, safety: ImageSafetySettings) -> images.Image.Image:
    """Full size: the test images are far under this side."""
    return small_image(data, 4096, safety)


def check(data: bytes, settings: FilterSettings | None = None):
    return PairScreen(settings or FilterSettings()).check(CAPTION, data)


def reason_of(data: bytes, settings: FilterSettings | None = None) -> str:
    with pytest.raises(Rejected) as caught:
        check(data, settings)
    return caught.value.reason


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_real_photos_pass_with_their_header_facts(name):
    kept = check(images.photo(name))
    assert kept.header.format == "JPEG" and kept.header.mode == "RGB" and not kept.header.animated
    assert min(kept.header.width, kept.header.height) > 100
    assert kept.colour_spread > 10


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (images.noise((80, 300)), "image_size"),  # a side <= 100
        (images.noise((100, 300)), "image_size"),  # exactly 100 is out too
        (images.noise((2048, 1024), fmt="JPEG"), "image_size"),  # a side >= 2048
        (images.noise((900, 200)), "aspect_ratio"),  # 4.5:1
        (images.noise((200, 700)), "aspect_ratio"),  # 1:3.5
        (images.solid((300, 300)), "monochrome"),
        (images.png_header_only(9000, 9000), "decompression_bomb"),  # 81M pixels: over our limit
        (images.png_header_only(100_000, 100_000), "decompression_bomb"),  # over Pillow's own hard limit
        (images.photo("chelsea")[:5000], "corrupt_image"),  # truncated JPEG
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "corrupt_image"),  # JPEG magic, garbage after
        (images.SVG, "unsupported_image_format"),
        (b"%PDF-1.7\n" + b"0" * 500, "unsupported_image_format"),
        (b"", "unsupported_image_format"),
    ],
    ids=["small", "side-100", "large", "wide", "tall", "single-colour", "bomb", "huge-bomb", "truncated", "garbage-jpeg", "svg", "pdf", "empty"],
)
def test_bad_or_ruled_out_images_get_their_reason(data, reason):
    assert reason_of(data) == reason


def test_aspect_ratio_exactly_three_passes():
    assert check(images.noise((600, 200))).header.width == 600


def test_rules_are_configurable_and_can_be_turned_off():
    settings = FilterSettings.model_validate({"rules": {"image_size": {"min_side": 50}, "monochrome": {"enabled": False}}})
    assert check(images.noise((80, 200)), settings).header.width == 80
    assert check(images.solid((300, 300)), settings).colour_spread == 0


def test_cmyk_converts_to_the_same_colours_as_rgb():
    rgb = np.asarray(decode_rgb(images.photo("chelsea"), ImageSafetySettings()), dtype=float)
    from_cmyk = np.asarray(decode_rgb(images.cmyk_jpeg(), ImageSafetySettings()), dtype=float)
    assert from_cmyk.shape == rgb.shape
    assert np.abs(from_cmyk - rgb).mean() < 12  # JPEG noise, not inverted or garbled channels
    assert check(images.cmyk_jpeg()).header.mode == "CMYK"


def test_transparency_lands_on_white():
    pixels = np.asarray(decode_rgb(images.rgba_half_transparent(), ImageSafetySettings()))
    assert (pixels[:, :100] == 255).all()
    assert check(images.rgba_half_transparent()).header.mode == "RGBA"
    palette = decode_rgb(images.palette_with_transparency(), ImageSafetySettings())
    assert palette.mode == "RGB" and check(images.palette_with_transparency()).header.mode == "P"


def test_16_bit_grey_scales_instead_of_clipping():
    pixels = np.asarray(decode_rgb(images.gray16_gradient(), ImageSafetySettings()))[:, :, 0]
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255
    assert 100 < pixels[0, 200] < 155  # the middle of the ramp is mid-grey, not white
    assert check(images.gray16_gradient()).header.mode == "I;16"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_use_their_first_frame(fmt):
    kept = check(images.animated(fmt))
    assert kept.header.animated
    image, _ = read_header(images.animated(fmt), ImageSafetySettings())
    first = np.asarray(decode_small(image, 64), dtype=float)
    assert first[:, :, 2].mean() < 200  # the photo, not the solid blue second frame


def test_perceptual_hash_survives_re_encoding_and_resizing():
    original = check(images.photo("chelsea")).phash
    smaller = check(images.encode(images.Image.open(images.io.BytesIO(images.photo("chelsea"))).resize((300, 200)), "PNG")).phash
    other = check(images.photo("coffee")).phash
    assert hamming(original, smaller) <= 6
    assert hamming(original, other) > 16
    assert -(2**63) <= original < 2**63


def test_perceptual_hash_is_a_signed_64_bit_integer():
    image, _ = read_header(images.noise((300, 300), seed=3), ImageSafetySettings())
    value = perceptual_hash(decode_small(image, 64))
    assert isinstance(value, int) and -(2**63) <= value < 2**63
