"""UI thumbnails of rows that are not screened yet: the header's size is checked against
screening's limits before any pixel is decoded, JPEG decodes at a reduced scale, and what
cannot be shown is skipped."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from asagi_dagster.filters.settings import ImageSafetySettings
from asagi_dagster.previews import sample_rows, thumbnails
from asagi_dagster.storage import Storage, StorageSettings

PROJECT = Path(__file__).resolve().parents[1]
# Screening silences this at import; pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def grey_png(width: int, height: int) -> bytes:
    """A single-colour 8-bit greyscale PNG, compressed row by row: a huge image in a few
    hundred KB, made without holding its pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width  # filter byte "none", then mid-grey pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def write_bytes_column(path: Path, values: list[bytes | None]) -> str:
    pq.write_table(pa.table({"bytes": pa.array(values, pa.binary())}), path)
    return str(path)


def decoded(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.removeprefix("data:image/png;base64,"))))


# The measurement runs in a fresh interpreter, so the peak is this call's and not the test run's.
_MEASURE = """
import json, resource, sys
from asagi_dagster.storage import StorageSettings
from asagi_dagster.previews import sample_rows, thumbnails
from asagi_dagster.storage import Storage
root, url = sys.argv[1], sys.argv[2]
storage = Storage(StorageSettings(root=root))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
found = thumbnails(storage, url)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "found": len(found)}))
"""


def measured(root: Path, url: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(root), url], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_169_megapixel_png_is_skipped_from_its_header_without_decoding(tmp_path):
    bomb = grey_png(13_000, 13_000)
    assert len(bomb) < 1_000_000  # small on disk: only the header tells
    assert 13_000 * 13_000 > ImageSafetySettings().max_pixels
    url = write_bytes_column(tmp_path / "bomb.parquet", [bomb])
    result = measured(tmp_path, url)
    assert result["found"] == 0
    assert result["growth_mb"] < 40, result  # decoding it would take 169 MB for the pixels alone


def test_a_large_jpeg_under_the_limit_decodes_at_reduced_scale(tmp_path):
    big = encoded(Image.new("RGB", (6000, 4000), (200, 40, 90)), "JPEG")  # 24 MP: 72 MB as full RGB
    url = write_bytes_column(tmp_path / "jpeg.parquet", [big])
    result = measured(tmp_path, url)
    assert result["found"] == 1
    assert result["growth_mb"] < 30, result


def test_unusable_rows_are_skipped_and_the_rest_shown_small(tmp_path):
    photo = encoded(Image.new("RGB", (640, 480), (10, 120, 200)), "PNG")
    rows = [
        grey_png(13_000, 13_000),  # over max_pixels
        b"not an image at all",
        photo[: len(photo) // 2],  # truncated: the header parses, the pixels do not
        None,
        encoded(Image.new("RGB", (300, 200), (0, 0, 0)), "GIF"),
        photo,
    ]
    url = write_bytes_column(tmp_path / "mixed.parquet", rows)
    storage = Storage(StorageSettings(root=str(tmp_path)))
    found = thumbnails(storage, url)
    assert len(found) == 2
    assert [decoded(uri).size for uri in found] == [(96, 64), (96, 72)]
    assert decoded(found[1]).getpixel((40, 30)) == (10, 120, 200)


def test_the_profile_limits_apply_when_given(tmp_path):
    url = write_bytes_column(tmp_path / "one.parquet", [encoded(Image.new("RGB", (640, 480), (1, 2, 3)), "PNG")])
    storage = Storage(StorageSettings(root=str(tmp_path)))
    assert len(thumbnails(storage, url)) == 1
    assert thumbnails(storage, url, safety=ImageSafetySettings(max_pixels=640 * 480 - 1)) == []
    assert thumbnails(storage, url, safety=ImageSafetySettings(formats=["JPEG"])) == []


def test_sample_rows_lead_with_what_people_read_and_end_with_ids(tmp_path):
    storage = Storage(StorageSettings(root=str(tmp_path)))
    table = pa.table(
        {
            "pair_id": ["p1"],
            "page_url": ["http://例え.jp/"],
            "image_url": ["http://例え.jp/a.png"],
            "caption": ["窓辺の猫"],
            "alt": ["猫の写真"],
            "record_id": ["r1"],
            "bytes": [grey_png(40, 30)],
        }
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    [row] = sample_rows(storage, str(tmp_path / "pairs.parquet"))
    assert list(row) == ["thumbnail", "alt", "caption", "page_url", "image_url", "pair_id", "record_id"]
    assert row["thumbnail"].startswith("![thumbnail](data:image/png;base64,") and row["alt"] == "猫の写真"
