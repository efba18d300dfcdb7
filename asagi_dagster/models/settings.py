"""A model the pipeline may load (the profile's ``models`` entries)."""

from __future__ import annotations

from asagi_dagster.settings import Strict


class ModelRef(Strict):
    """A model the pipeline may load: a hub id (cluster) or a local directory."""

    id: str
    revision: str | None = None
