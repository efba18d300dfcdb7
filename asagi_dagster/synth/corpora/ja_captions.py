"""ja_captions: long and short Japanese captions written from the English caption (what
is seen) and the pair's reference text (proper nouns); without a reference text, the
pair's own caption (its alt text) stands in."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth.corpora.base import PROVENANCE, Corpus, rows
from asagi_dagster.synth.prompts import JA_SYSTEM, Prompt
from asagi_dagster.synth.runner import TaskPlan
from asagi_dagster.synth.tasks import Item, Task

_SOURCES = (
    "同じ画像について、二つの情報があります。\n"
    "【英語の説明】画像に写っているものについては、こちらを信頼してください。\n"
    "{english_caption}\n"
    "【参考テキスト】固有名詞（地名、人名、商品名など）については、こちらを信頼してください。\n"
    "{reference_text}\n"
)
LONG_PROMPT = Prompt(
    id="ja_caption_long",
    version=1,
    system=JA_SYSTEM,
    instruction=(
        _SOURCES + "この二つをもとに、画像を詳しく説明する自然な日本語の文章を書いてください。\n"
        "画像に写っていないことは付け加えず、画像の中に書かれた文字には触れないでください。\n"
        "説明文だけを出力してください。"
    ),
)
SHORT_PROMPT = Prompt(
    id="ja_caption_short",
    version=1,
    system=JA_SYSTEM,
    instruction=(
        _SOURCES + "この二つをもとに、画像を一文で簡潔に説明する日本語の文を書いてください。\n"
        "画像に写っていないことは付け加えず、画像の中に書かれた文字には触れないでください。\n"
        "説明文だけを出力してください。"
    ),
)


def _caption(text: str, item: Item, seed: int) -> dict:
    return {"text": text}


LONG = Task(
    "ja_caption_long", LONG_PROMPT, japanese=True, image=False, parse=_caption, defaults={"generator": "japanese_llm", "min_chars": 40, "max_chars": 600}
)
SHORT = Task(
    "ja_caption_short", SHORT_PROMPT, japanese=True, image=False, parse=_caption, defaults={"generator": "japanese_llm", "min_chars": 8, "max_chars": 120}
)


def items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    references = {row["pair_id"]: row["reference_text"] for row in rows(storage, inputs["reference_texts"], ["pair_id", "reference_text"])}
    captions = {row["pair_id"]: row["caption"] for row in rows(storage, inputs["filtered_pairs"], ["pair_id", "caption"])}
    for row in rows(storage, inputs["english_captions"], ["pair_id", "text"]):
        pair_id = row["pair_id"]
        # The reference text when the page had one for the image, else the pair's own caption (its alt text).
        reference, source = (references[pair_id], "reference_text") if references.get(pair_id) else (captions.get(pair_id) or "", "caption")
        fields = {"english_caption": row["text"], "reference_text": reference}
        for length in ("long", "short"):
            plan = plans.get(f"ja_caption_{length}")
            if plan is not None:
                yield plan, Item(f"{pair_id}#{length}", pair_id, fields, carry={"length": length, "reference_source": source})


CORPUS = Corpus(
    name="ja_captions",
    description="Long and short Japanese captions merging the English caption (what is visible) with the reference text (proper nouns).",
    tasks=(LONG, SHORT),
    inputs=("english_captions", "reference_texts", "filtered_pairs"),
    schema=pa.schema(PROVENANCE + [("length", pa.string()), ("reference_source", pa.string())]),  # long | short; reference_text | caption
    items=items,
)
