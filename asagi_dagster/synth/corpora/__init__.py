"""The synthesized corpora, one module each, registered here.

A corpus module holds its tasks (prompt, parser, default settings), its inputs, its row
schema and its item function; a new corpus is one module and one line below, and the
assets, the licence gate and the profile's ``synthesis.tasks`` keys all read this
registry. Registry order is the order the tasks' prompts enter the tiny tokenizer text.
"""

from __future__ import annotations

from asagi_dagster.core import by_name
from asagi_dagster.synth.corpora import english_captions, ja_captions, synthetic_mcvqa, synthetic_vqa, translated_pairs
from asagi_dagster.synth.corpora.base import VERSION, Corpus
from asagi_dagster.synth.prompts import Prompt
from asagi_dagster.synth.tasks import Task

CORPORA: dict[str, Corpus] = by_name(
    english_captions.CORPUS,
    ja_captions.CORPUS,
    synthetic_vqa.CORPUS,
    synthetic_mcvqa.CORPUS,
    translated_pairs.CORPUS,
)
TASKS: dict[str, Task] = {task.name: task for corpus in CORPORA.values() for task in corpus.tasks}
PROMPTS: dict[str, Prompt] = {task.prompt.id: task.prompt for task in TASKS.values()}

__all__ = ["CORPORA", "PROMPTS", "TASKS", "VERSION", "Corpus"]
