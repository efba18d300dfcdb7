"""The requests the vLLM backend tests send, in a module light enough for the vLLM
subprocess (and the workers it spawns, which re-import its main module) to import."""

from asagi_dagster.engines import Request, SamplingSettings
from asagi_dagster.synth.corpora import PROMPTS

JA_CAPTION_SHORT = PROMPTS["ja_caption_short"]

GREEDY = SamplingSettings(temperature=0, max_tokens=16, repetition_penalty=1.0)
SAMPLED = SamplingSettings(max_tokens=16)


def requests() -> list[Request]:
    greedy = [Request(JA_CAPTION_SHORT.messages({"english_caption": f"a cat, photo {i}", "reference_text": "タマ"}), GREEDY, seed=i) for i in range(4)]
    sampled = [Request(JA_CAPTION_SHORT.messages({"english_caption": f"a dog, photo {i}", "reference_text": "ポチ"}), SAMPLED, seed=i) for i in range(4)]
    return greedy + sampled
