"""What every stage's settings are built on: a strict model (unknown keys are errors,
values frozen), the error a profile that cannot be used raises, and the path types that
resolve a relative local path against the profile's folder while it is validated.

Each stage owns its settings (``web/settings.py``, ``filters/settings.py``, ...); the
profile (``config.py``) composes them. Imports nothing else of the library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

# The validation context key that holds the profile file's folder (config.load_config sets it).
PROFILE_DIR = "profile_dir"


class ConfigError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _profile_dir(info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get(PROFILE_DIR)
    return Path(base) if base is not None else None


def _local_path(value: str, info: ValidationInfo) -> str:
    """Relative local paths are relative to the profile file; URLs stay as they are."""
    base = _profile_dir(info)
    if base is None or "://" in value:
        return value
    return str((base / value).resolve())


def _executable(value: str, info: ValidationInfo) -> str:
    """A path with a slash is relative to the profile file; a bare name is looked up on PATH."""
    base = _profile_dir(info)
    if base is None or "/" not in value:
        return value
    # Absolute but not resolved: a venv's python is a symlink, and following it leaves the venv.
    return os.path.normpath(base / value)


LocalPath = Annotated[str, AfterValidator(_local_path)]
ExecutablePath = Annotated[str, AfterValidator(_executable)]
