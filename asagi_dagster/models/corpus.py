"""Text the builtin tiny models' tokenizers are trained on, frozen in
tokenizer_texts.json beside this module: the sample pages (Japanese; the tiny CLIP's
corpus), and for the tiny Llama also the prompt library and the training template, so
prompts and plausible answers tokenize into real pieces rather than unknowns.

Frozen, so that building a tiny model needs none of the stages whose text it holds (no
import cycle) and the same text gives the same tokenizer. tests/test_tokenizer_texts.py
fails when the sample, prompts or template change and says how to write the file again.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

TEXTS_FILE = Path(__file__).with_name("tokenizer_texts.json")


@cache
def _texts() -> dict[str, list[str]]:
    return json.loads(TEXTS_FILE.read_text(encoding="utf-8"))


def page_texts() -> list[str]:
    return list(_texts()["pages"])


def tokenizer_corpus() -> list[str]:
    return list(_texts()["tiny_llm"])
