"""synthetic_vqa: a question target, question and answer per image, written from its
long Japanese caption and answerable from it alone."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth import validate
from asagi_dagster.synth.corpora.base import PROVENANCE, Corpus, rows
from asagi_dagster.synth.prompts import JA_SYSTEM, Prompt
from asagi_dagster.synth.runner import TaskPlan
from asagi_dagster.synth.tasks import Item, Task

PROMPT = Prompt(
    id="vqa",
    version=1,
    system=JA_SYSTEM,
    instruction=(
        "次の文章は、ある画像の詳しい説明です。\n"
        "{ja_caption}\n"
        "この画像について、質問と回答を一組作ってください。\n"
        "まず質問の対象（画像の中の物、人、場所など）を一つ決め、説明文から答えが分かる質問を書き、説明文だけに基づいて答えてください。\n"
        "画像の中に書かれた文字についての質問は作らないでください。\n"
        "次の形式で出力してください。\n"
        "質問対象: （対象）\n"
        "質問: （質問）\n"
        "回答: （回答）"
    ),
)


def _parse(text: str, item: Item, seed: int) -> dict:
    target, question, answer = validate.parse_vqa(text)
    return {"target": target, "question": question, "text": answer}


VQA = Task("vqa", PROMPT, japanese=True, image=False, parse=_parse, defaults={"generator": "japanese_llm", "min_chars": 2, "max_chars": 400})


def items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("vqa")
    if plan is None:
        return
    for row in rows(storage, inputs["ja_captions"], ["pair_id", "length", "text"]):
        if row["length"] == "long":
            yield plan, Item(row["pair_id"], row["pair_id"], {"ja_caption": row["text"]})


CORPUS = Corpus(
    name="synthetic_vqa",
    description="A question target, question and answer per image, grounded in its long Japanese caption.",
    tasks=(VQA,),
    inputs=("ja_captions",),
    schema=pa.schema(PROVENANCE + [("target", pa.string()), ("question", pa.string())]),  # text: the answer
    items=items,
)
