"""What each synthesis task asks for and how its answer becomes a row.

An ``Item`` is one thing to generate for (a pair's image, a caption to question about,
an English text to translate); a ``Task`` turns it into chat messages and parses the
model's answer into the task's output fields, raising ``Invalid`` when it will not do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from asagi_dagster.config import TaskSettings
from asagi_dagster.synth import validate
from asagi_dagster.synth.prompts import PROMPTS, Prompt


@dataclass
class Item:
    item_id: str  # unique within the partition; a rejection's record_id
    pair_id: str  # the source pair (provenance)
    fields: dict[str, str]  # the prompt's slots
    image: bytes | None = None
    carry: dict = field(default_factory=dict)  # input columns copied into the output row


@dataclass(frozen=True)
class Task:
    name: str
    japanese: bool  # the answer must be Japanese
    image: bool  # the request carries the item's image
    parse: Callable[[str, Item, int], dict]  # (checked text, item, seed) -> output fields

    @property
    def prompt(self) -> Prompt:
        return PROMPTS[self.name]

    def check(self, text: str, item: Item, seed: int, settings: TaskSettings) -> dict:
        text = validate.check_text(text, settings, japanese=self.japanese, echo_markers=self.prompt.echo_markers())
        if "source_text" in item.carry:  # a translation: as long as its source, roughly
            validate.check_source_ratio(text, item.carry["source_text"], settings.source_length_ratio)
        return self.parse(text, item, seed)


def _caption(text: str, item: Item, seed: int) -> dict:
    return {"text": text}


def _vqa(text: str, item: Item, seed: int) -> dict:
    target, question, answer = validate.parse_vqa(text)
    return {"target": target, "question": question, "text": answer}


def _mcvqa(text: str, item: Item, seed: int) -> dict:
    answer = item.fields["answer"]
    distractors = validate.parse_distractors(text, answer)
    question, options, letter = validate.multiple_choice(item.fields["question"], answer, distractors, seed)
    return {"question": question, "options": options, "text": letter}


def _translation(text: str, item: Item, seed: int) -> dict:
    if item.carry.get("kind") != "qa":
        return {"text": text}
    values = validate.labelled_fields(text, ["質問", "回答"])
    return {"question": values["質問"], "text": values["回答"]}


TASKS = {
    task.name: task
    for task in (
        Task("english_caption", japanese=False, image=True, parse=_caption),
        Task("ja_caption_long", japanese=True, image=False, parse=_caption),
        Task("ja_caption_short", japanese=True, image=False, parse=_caption),
        Task("vqa", japanese=True, image=False, parse=_vqa),
        Task("mcvqa", japanese=True, image=False, parse=_mcvqa),
        Task("translation", japanese=True, image=False, parse=_translation),
    )
}
