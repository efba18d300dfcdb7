"""Published scores the leaderboard shows beside ours."""

from __future__ import annotations

# The Asagi model card's table (llm-jp-eval-mm): Heron-Bench LLM (%), JA-VLM-Bench-In-the-Wild
# ROUGE-L and LLM (/5), JA-VG-VQA-500 ROUGE-L and LLM (/5); its judge is not named in our sources.
ASAGI_MODEL_CARD = "Asagi model card (llm-jp-eval-mm)"
ASAGI_MODEL_CARD_MODELS = ("Asagi-2B", "Asagi-4B", "Asagi-14B", "llm-jp-3-vila-14b", "GPT-4o")


def asagi_model_card(**by_metric: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """model -> metric -> value from the card's columns of one benchmark (metric -> one
    value per model, in ASAGI_MODEL_CARD_MODELS order)."""
    return {model: {metric: values[i] for metric, values in by_metric.items()} for i, model in enumerate(ASAGI_MODEL_CARD_MODELS)}
