"""The real Japanese Heron-Bench text vendored in asagi_sample/japanese_heron_bench: references (gpt-4-0125-preview
answers) and three models' answers, paired by question id."""

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2] / "asagi_sample" / "japanese_heron_bench"
MODELS = ("claude3_0404_ja", "gemini_0404_ja", "gpt4v_0404_ja")


def _by_question(name: str) -> dict[int, str]:
    rows = [json.loads(line) for line in (FIXTURE / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["question_id"]: row["text"] for row in rows}


def reference_and_answers(model: str) -> tuple[list[str], list[str]]:
    references, answers = _by_question("answers_gpt4"), _by_question(model)
    ids = sorted(references)
    return [references[i] for i in ids], [answers[i] for i in ids]
