"""synthetic_mcvqa: multiple-choice VQA. Three wrong options, clearly different from a
VQA item's answer, are written and shuffled in with it as A-D (the shuffle fixed by the
item's seed); the training text is the right letter."""

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
    id="mcvqa",
    version=1,
    system=JA_SYSTEM,
    instruction=(
        "次の文章は、ある画像の詳しい説明です。\n"
        "{ja_caption}\n"
        "この画像についての質問と正しい答えは次のとおりです。\n"
        "質問: {question}\n"
        "正解: {answer}\n"
        "多肢選択問題にするため、正解とははっきり異なる誤った選択肢を三つ作ってください。\n"
        "正解と同じ意味の言い換えや、正解とも言えるものは避け、正解と同じくらいの長さにしてください。\n"
        "次の形式で出力してください。\n"
        "誤答1: （選択肢）\n"
        "誤答2: （選択肢）\n"
        "誤答3: （選択肢）"
    ),
)


def _parse(text: str, item: Item, seed: int) -> dict:
    answer = item.fields["answer"]
    distractors = validate.parse_distractors(text, answer)
    question, options, letter = validate.multiple_choice(item.fields["question"], answer, distractors, seed)
    return {"question": question, "options": options, "text": letter}


MCVQA = Task("mcvqa", PROMPT, japanese=True, image=False, parse=_parse, defaults={"generator": "japanese_llm", "min_chars": 1, "max_chars": 80})


def items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("mcvqa")
    if plan is None:
        return
    captions = {row["pair_id"]: row["text"] for row in rows(storage, inputs["ja_captions"], ["pair_id", "length", "text"]) if row["length"] == "long"}
    for row in rows(storage, inputs["synthetic_vqa"], ["pair_id", "question", "text"]):
        fields = {"ja_caption": captions.get(row["pair_id"], ""), "question": row["question"], "answer": row["text"]}
        yield plan, Item(row["pair_id"], row["pair_id"], fields, carry={"correct_answer": row["text"]})


CORPUS = Corpus(
    name="synthetic_mcvqa",
    description="Multiple-choice VQA: three wrong options clearly different from the answer, shuffled with it as A-D.",
    tasks=(MCVQA,),
    inputs=("synthetic_vqa", "ja_captions"),
    # question: with the A-D options; text: the right letter
    schema=pa.schema(PROVENANCE + [("question", pa.string()), ("options", pa.list_(pa.string())), ("correct_answer", pa.string())]),
    items=items,
)
