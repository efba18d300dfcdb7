"""Text the tiny generators' tokenizer is trained on: the sample pages (Japanese) and
the prompt library (both languages), so prompts and plausible answers tokenize into real pieces rather than unknowns."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def tokenizer_corpus() -> list[str]:
    from asagi_dagster.sample.site import page_texts
    from asagi_dagster.synth.prompts import PROMPTS

    texts = page_texts()
    for prompt in PROMPTS.values():
        texts += [prompt.system or "", prompt.instruction]
    return [text for text in texts if text]
