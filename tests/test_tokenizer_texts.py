"""The tiny models' tokenizer text (asagi_dagster/models/tokenizer_texts.json) is what the
sample pages, the prompt library and the training template say now. When one of them
changes, write the file again (the tiny models' tokenizers change with it):

    python -m tests.test_tokenizer_texts
"""

from __future__ import annotations

import json

from asagi_dagster.models.corpus import TEXTS_FILE, page_texts, tokenizer_corpus


def current_texts() -> dict[str, list[str]]:
    from asagi_dagster.synth.corpora import PROMPTS
    from asagi_dagster.train import template
    from asagi_sample.site import page_texts as sample_pages

    pages = sample_pages()
    texts = list(pages)
    for prompt in PROMPTS.values():
        texts += [prompt.system or "", prompt.instruction]
    texts += [template.prompt_text(""), template.MCVQA_SUFFIX, *template.CAPTION_INSTRUCTIONS["short"], *template.CAPTION_INSTRUCTIONS["long"]]
    return {"pages": pages, "tiny_llm": [text for text in texts if text]}


def test_the_frozen_tokenizer_text_is_the_sources_text():
    current = current_texts()
    assert page_texts() == current["pages"] and tokenizer_corpus() == current["tiny_llm"], "run: python -m tests.test_tokenizer_texts"


if __name__ == "__main__":
    TEXTS_FILE.write_text(json.dumps(current_texts(), ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {TEXTS_FILE}")
