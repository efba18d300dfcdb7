"""Small looks at a partition's data for the UI: a few rows and image thumbnails."""

from __future__ import annotations

import base64
import io

from asagi_dagster.core import Rejected
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.settings import ImageSafetySettings
from asagi_dagster.storage import Storage

_BULKY = {"html", "bytes", "text_blocks", "images"}
# What people read first in a sample row, in this order; ids and bookkeeping go last.
READ_FIRST = ("thumbnail", "alt", "caption", "text", "question", "answer", "choices", "reference_text", "figcaption", "title", "reason", "detail")


def reading_order(columns: list[str]) -> list[str]:
    """``columns`` with what people read first (READ_FIRST) and ids (``id``, ``*_id``) last."""

    def rank(name: str) -> tuple[int, int]:
        if name in READ_FIRST:
            return 0, READ_FIRST.index(name)
        return (2, 0) if name == "id" or name.endswith("_id") else (1, 0)

    return sorted(columns, key=rank)  # stable: the file's order within each rank


def sample_rows(storage: Storage, data_url: str, n: int = 5, max_chars: int = 48, side: int = 64) -> list[dict]:
    """The first ``n`` rows without bulky columns, long strings shortened, in reading
    order; a row's image (a ``bytes`` column) as a thumbnail in Markdown."""
    available = storage.columns(data_url)
    columns = [name for name in available if name not in _BULKY] + (["bytes"] if "bytes" in available else [])
    rows = []
    for row in storage.iter_rows(storage.strip_protocol(data_url), columns=columns, batch_rows=max(n, 1)):
        shown = {k: _short(v, max_chars) for k, v in row.items() if k != "bytes"}
        if "bytes" in row:
            uri = _thumbnail(row["bytes"], side, ImageSafetySettings())
            shown["thumbnail"] = f"![thumbnail]({uri})" if uri else ""
        rows.append({name: shown[name] for name in reading_order(list(shown))})
        if len(rows) >= n:
            break
    return rows


def thumbnails(storage: Storage, data_url: str, n: int = 4, side: int = 96, safety: ImageSafetySettings | None = None) -> list[str]:
    """PNG data URIs of the first ``n`` images in a ``bytes`` column that pass screening's
    header limits (``safety``, the defaults when None) and decode; others are skipped.

    Rows here may not be screened yet (the ingest's are not), so the size from the header
    is checked before any pixel is decoded, and JPEG decodes at a reduced scale.
    """
    safety = safety or ImageSafetySettings()
    found = []
    for row in storage.iter_rows(storage.strip_protocol(data_url), columns=["bytes"], batch_rows=16):
        uri = _thumbnail(row["bytes"], side, safety)
        if uri:
            found.append(uri)
        if len(found) >= n:
            break
    return found


def _thumbnail(data: bytes | None, side: int, safety: ImageSafetySettings) -> str | None:
    """A PNG data URI of the image, or None when it is over the limits or does not decode."""
    if not data:
        return None
    try:
        image = small_image(data, side, safety)
    except Rejected:  # over the limits or undecodable: filtering judges and records it later
        return None
    except Exception:  # noqa: BLE001 - whatever else a crafted image raises: a preview must never fail a run
        return None
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _short(value, max_chars: int):
    if isinstance(value, str) and len(value) > max_chars:
        return value[: max_chars - 1] + "…"
    return value


def figure_data_uri(figure) -> str:
    """A matplotlib figure as a PNG data URI (the UI renders it in Markdown metadata); closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
