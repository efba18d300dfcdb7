"""translated_pairs: an English dataset's captions, or its question-answer pairs, in
Japanese; one partition per dataset the profile lists in synthesis.translate_datasets.
A translation must be about as long as its source (``source_length_ratio``)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth import validate
from asagi_dagster.synth.corpora.base import PROVENANCE, Corpus, rows
from asagi_dagster.synth.prompts import Prompt
from asagi_dagster.synth.runner import TaskPlan
from asagi_dagster.synth.tasks import Item, Task

PROMPT = Prompt(
    id="translation",
    version=1,
    system="あなたは英語から日本語への翻訳者です。",
    instruction=(
        "次の英語を自然な日本語に翻訳してください。\n"
        "「質問:」「回答:」の見出しがあれば、見出しは日本語のまま残してください。\n"
        "翻訳だけを出力してください。\n"
        "{english}"
    ),
)


def _parse(text: str, item: Item, seed: int) -> dict:
    if item.carry.get("kind") != "qa":
        return {"text": text}
    values = validate.labelled_fields(text, ["質問", "回答"])
    return {"question": values["質問"], "text": values["回答"]}


TRANSLATION = Task("translation", PROMPT, japanese=True, image=False, parse=_parse, defaults={"generator": "japanese_llm", "min_chars": 2, "max_chars": 1000})


def items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("translation")
    if plan is None:
        return
    kept = {row["pair_id"] for row in rows(storage, inputs["filtered_dataset_pairs"], ["pair_id"])}
    for row in rows(storage, inputs["dataset_pairs"], ["pair_id", "text", "question", "answer"]):
        if row["pair_id"] not in kept:
            continue
        if row["text"]:
            english, kind = row["text"], "caption"
        else:
            english, kind = f"質問: {row['question']}\n回答: {row['answer']}", "qa"
        yield plan, Item(row["pair_id"], row["pair_id"], {"english": english}, carry={"kind": kind, "source_text": english})


CORPUS = Corpus(
    name="translated_pairs",
    description="An English dataset's captions or question-answer pairs, translated into Japanese (one partition per dataset).",
    tasks=(TRANSLATION,),
    inputs=("filtered_dataset_pairs", "dataset_pairs"),
    schema=pa.schema(PROVENANCE + [("kind", pa.string()), ("source_text", pa.string()), ("question", pa.string())]),  # caption | qa
    items=items,
    partitions="datasets",
)
