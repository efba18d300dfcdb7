"""Asking an OpenAI-compatible judge, with eval-mm 0.4.1's judging semantics.

The prompts follow eval-mm's in what the judge is given and must answer (Heron-Bench:
context, question, reference and model answer, two 1-10 scores as JSON with keys
``score_gpt`` and ``score``; the others: question, reference and prediction, one 1-5
integer), with its system roles, temperature 0, a seed and 1,024 output tokens. The
wording is this project's own (the rule here is that nothing is copied from another
repository), so its version is recorded with every score; to judge with eval-mm's exact
text, run eval-mm on the partition's prediction.jsonl.

Each repeat judges every item once with seed ``seed + repeat``; the aggregate scores of
the repeats are averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from asagi_dagster.engines import GenerationSettings, OpenAIGenerator, Request, SamplingSettings
from asagi_dagster.eval.settings import JudgeSettings
from asagi_dagster.eval.verdicts import heron_score, likert_score

PROMPT_VERSION = "asagi-judge-1 (eval-mm 0.4.1 semantics)"

HERON_SYSTEM = "You check the quality of answers carefully and precisely."
HERON_PROMPT = """Two answers to a question about an image are given: a reference answer and a model's answer.
You also get a written description of the image (the context), since you cannot see it.

Judge each answer on its own: how correct, relevant and complete it is as an answer to the question, given the context.
Give each a score from 1 to 10:
- 10: entirely correct and relevant, answers the whole question.
- 8 or 9: correct apart from a small inaccuracy or omission.
- 6 or 7: broadly correct, with clear errors or missing important details.
- 4 or 5: large errors or missing key points, still partly relevant.
- 1 to 3: mostly or wholly wrong, irrelevant or meaningless.

Reply with this JSON object and nothing else, "score_gpt" being the reference answer's score and "score" the model answer's:
```json
{{"score_gpt": <integer>, "score": <integer>}}
```

The inputs, as JSON strings:
{{"context": {context}, "question": {question}, "reference_answer": {reference}, "model_answer": {prediction}}}
"""

LIKERT_SYSTEM = "You are a careful evaluator of answers."
LIKERT_PROMPT = """Below are a question about an image, its correct answer, and a prediction.
Rate how well the prediction agrees with the correct answer, as an answer to the question, from 1 to 5:
5: fully agrees; correct and relevant.
4: mostly correct; small inaccuracies or missing details.
3: partly correct; clear errors or a missing key point.
2: mostly wrong or irrelevant, with small correct fragments.
1: wrong or irrelevant.
Reply with the score alone (one integer from 1 to 5), no explanation.

Question: {question}
Correct answer: {reference}
Prediction: {prediction}

Score:"""


@dataclass(frozen=True)
class Judged:
    score: float  # the mean over repeats of the task score
    per_repeat: list[float]
    parse_failures: int  # over all repeats
    errors: int  # requests that got no answer (counted as unparsed)
    outputs: list[list[str]]  # per repeat, per item: the judge's raw output ("" on error)
    details: dict  # Heron: per-category relative scores (mean over repeats)


class Judge:
    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.client = OpenAIGenerator(GenerationSettings(model=settings.model, backend="openai", endpoint=settings.endpoint))

    def record(self) -> dict:
        """What identifies these judge scores; stored with every one."""
        s = self.settings
        model = f"{s.model}@{s.revision}" if s.revision else s.model
        return {"judge_model": model, "judge_prompt_version": PROMPT_VERSION, "judge_temperature": 0.0, "judge_seed": s.seed, "judge_repeats": s.repeats}

    def heron(self, items: list[dict], predictions: list[str]) -> Judged:
        prompts = [
            HERON_PROMPT.format(context=_json(i["context"]), question=_json(i["question"]), reference=_json(i["reference"]), prediction=_json(p))
            for i, p in zip(items, predictions)
        ]
        outputs, errors = self._ask(HERON_SYSTEM, prompts)
        categories = [i["category"] for i in items]
        scores = [heron_score(categories, repeat) for repeat in outputs]
        relative = {c: sum(s.relative[c] for s in scores) / len(scores) for c in scores[0].relative}
        return Judged(
            score=sum(s.score for s in scores) / len(scores),
            per_repeat=[s.score for s in scores],
            parse_failures=sum(s.parse_failures for s in scores),
            errors=errors,
            outputs=outputs,
            details={"relative": relative},
        )

    def likert(self, items: list[dict], predictions: list[str]) -> Judged:
        prompts = [LIKERT_PROMPT.format(question=i["question"], reference=i["reference"], prediction=p) for i, p in zip(items, predictions)]
        outputs, errors = self._ask(LIKERT_SYSTEM, prompts)
        scores = [likert_score(repeat) for repeat in outputs]
        return Judged(
            score=sum(s.score for s in scores) / len(scores),
            per_repeat=[s.score for s in scores],
            parse_failures=sum(s.parse_failures for s in scores),
            errors=errors,
            outputs=outputs,
            details={},
        )

    def _ask(self, system: str, prompts: list[str]) -> tuple[list[list[str]], int]:
        sampling = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=self.settings.max_tokens, repetition_penalty=1.0)
        outputs, errors = [], 0
        for repeat in range(self.settings.repeats):
            requests = [
                Request(messages=[{"role": "system", "content": system}, {"role": "user", "content": p}], sampling=sampling, seed=self.settings.seed + repeat)
                for p in prompts
            ]
            answers = self.client.generate(requests)
            errors += sum(a.text is None for a in answers)
            outputs.append([a.text or "" for a in answers])
        return outputs, errors


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
