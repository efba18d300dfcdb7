"""Text the tiny models' tokenizer is trained on: the sample pages (Japanese), the
prompt library (both languages) and the training template, so prompts and plausible
answers tokenize into real pieces rather than unknowns."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def tokenizer_corpus() -> list[str]:
    from asagi_dagster.sample.site import page_texts
    from asagi_dagster.synth.prompts import PROMPTS
    from asagi_dagster.train import template

    texts = page_texts()
    for prompt in PROMPTS.values():
        texts += [prompt.system or "", prompt.instruction]
    texts += [template.prompt_text(""), template.MCVQA_SUFFIX, *template.CAPTION_INSTRUCTIONS["short"], *template.CAPTION_INSTRUCTIONS["long"]]
    return [text for text in texts if text]
