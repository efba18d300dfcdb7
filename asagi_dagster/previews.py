"""Small looks at a partition's data for the UI: a few rows and image thumbnails."""

from __future__ import annotations

import base64
import io

from asagi_dagster.config import ImageSafetySettings
from asagi_dagster.filters import Rejected
from asagi_dagster.filters.images import small_image
from asagi_dagster.storage import Storage

_BULKY = {"html", "bytes", "text_blocks", "images"}


def sample_rows(storage: Storage, data_url: str, n: int = 5, max_chars: int = 80) -> list[dict]:
    """The first ``n`` rows without bulky columns, long strings shortened."""
    columns = [name for name in storage.columns(data_url) if name not in _BULKY]
    rows = []
    for row in storage.iter_rows(storage.strip_protocol(data_url), columns=columns, batch_rows=max(n, 1)):
        rows.append({k: _short(v, max_chars) for k, v in row.items()})
        if len(rows) >= n:
            break
    return rows


def thumbnails(
    storage: Storage, data_url: str, n: int = 4, side: int = 96, safety: ImageSafetySettings | None = None
) -> list[str]:
    """PNG data URIs of the first ``n`` images in a ``bytes`` column that pass screening's
    header limits (``safety``, the defaults when None) and decode; others are skipped.

    Rows here may not be screened yet (the ingest's are not), so the size from the header
    is checked before any pixel is decoded, and JPEG decodes at a reduced scale.
    """
    safety = safety or ImageSafetySettings()
    found = []
    for row in storage.iter_rows(storage.strip_protocol(data_url), columns=["bytes"], batch_rows=16):
        if not row["bytes"]:
            continue
        try:
            image = small_image(row["bytes"], side, safety)
        except Rejected:  # over the limits or undecodable: filtering judges and records it later
            continue
        except Exception:  # noqa: BLE001 - whatever else a crafted image raises: a preview must never fail a run
            continue
        out = io.BytesIO()
        image.save(out, format="PNG")
        found.append("data:image/png;base64," + base64.b64encode(out.getvalue()).decode())
        if len(found) >= n:
            break
    return found


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
