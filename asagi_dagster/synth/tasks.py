"""What a synthesis task is: what it asks for and how its answer becomes a row.

An ``Item`` is one thing to generate for (a pair's image, a caption to question about,
an English text to translate); a ``Task`` turns it into chat messages and parses the
model's answer into the task's output fields, raising ``Invalid`` when it will not do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from asagi_dagster.synth import validate
from asagi_dagster.synth.prompts import Prompt
from asagi_dagster.synth.settings import TaskSettings


@dataclass
class Item:
    item_id: str  # unique within the partition; a rejection's record_id
    pair_id: str  # the source pair (provenance)
    fields: dict[str, str]  # the prompt's slots
    image: bytes | None = None
    carry: dict = field(default_factory=dict)  # input columns copied into the output row


@dataclass(frozen=True)
class Task:
    name: str  # the profile's synthesis.tasks key, and the prompt's id
    prompt: Prompt
    japanese: bool  # the answer must be Japanese
    image: bool  # the request carries the item's image
    parse: Callable[[str, Item, int], dict]  # (checked text, item, seed) -> output fields
    # The task's own settings (TaskSettings fields: generator, length bounds, ...); the
    # profile's synthesis.tasks entry is laid over them, so it names only what it changes.
    defaults: dict = field(default_factory=dict)

    def settings(self, profile_entry: dict) -> TaskSettings:
        return TaskSettings.model_validate({**self.defaults, **profile_entry})

    def check(self, text: str, item: Item, seed: int, settings: TaskSettings) -> dict:
        text = validate.check_text(text, settings, japanese=self.japanese, echo_markers=self.prompt.echo_markers())
        if "source_text" in item.carry:  # a translation: as long as its source, roughly
            validate.check_source_ratio(text, item.carry["source_text"], settings.source_length_ratio)
        return self.parse(text, item, seed)
