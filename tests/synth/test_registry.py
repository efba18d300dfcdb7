"""The corpus registry is whole: every corpus has its module, schema (provenance first),
tasks with prompts and default settings, inputs that are assets, and a row in
docs/assets.md; the profile's task entries lie over the defaults and are checked
against the registry."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from asagi_dagster.config import load_config
from asagi_dagster.settings import ConfigError
from asagi_dagster.synth.corpora import CORPORA, PROMPTS, TASKS
from asagi_dagster.synth.corpora.base import PROVENANCE
from asagi_dagster.synth.generate import check_tasks, task_settings
from asagi_dagster.synth.settings import SynthesisSettings
from tests.synth.helpers import GENERATORS, synthesis_section

DOCS = Path(__file__).resolve().parents[2] / "docs" / "assets.md"


@pytest.mark.parametrize("name", list(CORPORA))
def test_each_corpus_is_described_whole(name):
    corpus = CORPORA[name]
    module = importlib.import_module(corpus.items.__module__)
    assert corpus.name == name and module.__name__.endswith(f".corpora.{name}"), "one module per corpus, named after it"
    assert module.__doc__ and module.__doc__.startswith(f"{name}:") and corpus.description
    assert corpus.schema.names[: len(PROVENANCE)] == [column for column, _ in PROVENANCE], "provenance columns first"
    assert corpus.tasks and corpus.inputs
    for task in corpus.tasks:
        assert task.prompt.id == task.name and task.prompt.version >= 1
        assert task.settings({}).generator, f"{task.name}: its defaults name a generator"


def test_task_names_are_unique_across_corpora():
    names = [task.name for corpus in CORPORA.values() for task in corpus.tasks]
    assert len(names) == len(set(names)) == len(TASKS) == len(PROMPTS)


def test_every_input_is_an_asset_of_the_code_location():
    from asagi_dagster.definitions import build_definitions

    keys = {key.to_user_string() for key in build_definitions().resolve_all_asset_keys()}
    for corpus in CORPORA.values():
        assert corpus.name in keys and set(corpus.inputs) <= keys, corpus.name


def test_docs_have_a_row_per_corpus_and_name_its_rejections():
    docs = DOCS.read_text(encoding="utf-8")
    for corpus in CORPORA.values():
        assert re.search(rf"^\| `{corpus.name}` \|", docs, re.M), f"{corpus.name}: no row in docs/assets.md"
        for reason in corpus.rejections:
            assert f"`{reason}`" in docs, f"{corpus.name}: rejection {reason} is not in docs/assets.md"


def test_a_task_entry_keeps_the_task_defaults_it_does_not_name(tmp_path):
    from tests.test_config import write_profile

    section = synthesis_section()
    section["tasks"]["english_caption"] = {"generator": "caption_vlm", "sampling": {"max_tokens": 512}}
    synthesis = load_config(write_profile(tmp_path, synthesis=section)).synthesis
    english = task_settings(synthesis, TASKS["english_caption"])
    assert (english.min_chars, english.max_chars, english.sampling.max_tokens) == (40, 2000, 512)
    mcvqa = task_settings(synthesis, TASKS["mcvqa"])
    assert (mcvqa.min_chars, mcvqa.max_chars) == (1, 80)


def test_unknown_tasks_and_generators_are_refused():
    with pytest.raises(ConfigError, match="vqa_v2: not a synthesis task"):
        check_tasks(SynthesisSettings(generators=GENERATORS, tasks={"vqa_v2": {"generator": "japanese_llm"}}))
    with pytest.raises(ConfigError, match="synthesis.tasks.english_caption.generator: 'caption_vlm' is not in synthesis.generators"):
        check_tasks(SynthesisSettings(generators={"japanese_llm": GENERATORS["japanese_llm"]}))
    check_tasks(SynthesisSettings(generators={"japanese_llm": GENERATORS["japanese_llm"]}, tasks={"english_caption": {"enabled": False}}))


def test_a_bad_field_fails_when_the_profile_loads():
    with pytest.raises(ValueError, match="tasks.vqa"):
        SynthesisSettings(generators=GENERATORS, tasks={"vqa": {"min_chars": "many"}})
    with pytest.raises(ValueError, match="tasks.vqa"):
        SynthesisSettings(generators=GENERATORS, tasks={"vqa": {"min_char": 3}})
