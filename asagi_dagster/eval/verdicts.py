"""Reading and aggregating LLM-judge outputs with eval-mm 0.4.1's semantics.

- JA-VLM-Bench-In-the-Wild and JA-VG-VQA-500: the judge answers 1-5; the first digit
  anywhere in its output is the score. An output without a digit counts as 0 in the
  mean, as in eval-mm, and is also counted as a parse failure so it shows.
- Heron-Bench: the judge scores the reference and the model answer 1-10 in one JSON
  object (``score_gpt``, ``score``), fenced as ```json or bare; an output without such an
  object scores -1 for both. Per category (conv, detail, complex) the relative score is
  100 x mean(model) / max(0.01, mean(reference)), the -1s included as eval-mm includes
  them, and a category whose model mean is -1 is left at 0; the reported score is the
  unweighted mean of the three.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

HERON_CATEGORIES = ("conv", "detail", "complex")
_FENCED = re.compile(r"```json(.*?)```", re.DOTALL)
_BRACES = re.compile(r"\{.*?\}", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1F\x7F]")


def first_digit(output: str) -> int | None:
    """The first digit of a 1-5 judge output, or None when it has none."""
    found = re.search(r"\d", output)
    return int(found.group()) if found else None


@dataclass(frozen=True)
class LikertScore:
    score: float  # the mean, unparsed outputs counted as 0
    parse_failures: int
    items: int


def likert_score(outputs: list[str]) -> LikertScore:
    if not outputs:
        raise ValueError("no judge outputs to score")
    digits = [first_digit(output) for output in outputs]
    return LikertScore(
        score=sum(d or 0 for d in digits) / len(digits),
        parse_failures=sum(d is None for d in digits),
        items=len(digits),
    )


def heron_pair(output: str) -> tuple[int, int] | None:
    """(model score, reference score) from a Heron judge output, or None."""
    candidates = _FENCED.findall(output) or _BRACES.findall(output)
    for candidate in candidates:
        for text in (candidate.strip(), _CONTROL.sub("", candidate.strip())):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and "score" in parsed and "score_gpt" in parsed:
                try:
                    return int(parsed["score"]), int(parsed["score_gpt"])
                except (TypeError, ValueError):  # eval-mm raises here; one bad output must not end a run
                    pass
            break  # valid JSON without usable scores: the next candidate, not the cleaned text
    return None


@dataclass(frozen=True)
class HeronScore:
    score: float  # mean of the three category relative scores
    relative: dict[str, float]  # category -> 100 x mean(model) / mean(reference)
    model_mean: dict[str, float]
    parse_failures: int
    items: int


def heron_score(categories: list[str], outputs: list[str]) -> HeronScore:
    """Aggregate Heron judge outputs, one per item in ``categories`` order."""
    if len(categories) != len(outputs) or not outputs:
        raise ValueError(f"{len(categories)} categories for {len(outputs)} judge outputs")
    pairs = [heron_pair(output) or (-1, -1) for output in outputs]
    relative: dict[str, float] = {}
    model_mean: dict[str, float] = {}
    for category in HERON_CATEGORIES:
        own = [p[0] for p, c in zip(pairs, categories) if c == category]
        reference = [p[1] for p, c in zip(pairs, categories) if c == category]
        if not own or sum(own) / len(own) == -1:
            relative[category] = 0.0
            continue
        model_mean[category] = sum(own) / len(own)
        relative[category] = 100 * model_mean[category] / max(0.01, sum(reference) / len(reference))
    return HeronScore(
        score=sum(relative.values()) / len(HERON_CATEGORIES),
        relative=relative,
        model_mean=model_mean,
        parse_failures=sum(p[0] == -1 for p in pairs),
        items=len(pairs),
    )
