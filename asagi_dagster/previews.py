"""Small looks at a partition's data for the UI: a few rows and image thumbnails."""

from __future__ import annotations

import base64
import io

from PIL import Image

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


def thumbnails(storage: Storage, data_url: str, n: int = 4, side: int = 96) -> list[str]:
    """PNG data URIs of the first ``n`` decodable images in a ``bytes`` column."""
    found = []
    for row in storage.iter_rows(storage.strip_protocol(data_url), columns=["bytes"], batch_rows=16):
        try:
            image = Image.open(io.BytesIO(row["bytes"]))
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
        except Exception:  # a preview must never fail a run; filtering judges images later
            continue
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
