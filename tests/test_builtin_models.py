"""Every ``builtin:`` model id resolves in one place (models/tiny.py ``builtin_folder``),
and each role says which ones it can load."""

from __future__ import annotations

import pytest

from asagi_dagster.engines import GenerationSettings, model_path
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.models.tiny import BUILTIN_TINY_CLIP, BUILTIN_TINY_LLAMA, BUILTIN_TINY_SIGLIP, builtin_folder
from asagi_dagster.settings import ConfigError
from asagi_dagster.train.model import model_source


def test_a_builtin_id_is_a_folder_built_once():
    folder = builtin_folder(BUILTIN_TINY_SIGLIP, (BUILTIN_TINY_SIGLIP,))
    assert (folder / "config.json").is_file() and builtin_folder(BUILTIN_TINY_SIGLIP, (BUILTIN_TINY_SIGLIP,)) == folder


def test_each_role_names_the_builtin_models_it_can_load():
    with pytest.raises(ConfigError, match=r"unknown builtin model 'builtin:tiny-clip-ja' here \(known: builtin:tiny-llama-ja, builtin:tiny-llava-ja\)"):
        model_path(GenerationSettings(model=BUILTIN_TINY_CLIP))
    with pytest.raises(ConfigError, match=r"known: builtin:tiny-siglip, builtin:tiny-llama-ja"):
        model_source(ModelRef(id="builtin:nope"))
    with pytest.raises(ConfigError, match="unknown builtin model 'builtin:tiny-llama-ja'"):
        builtin_folder(BUILTIN_TINY_LLAMA, (BUILTIN_TINY_CLIP,))
