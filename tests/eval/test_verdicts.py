"""Judge outputs read and aggregated as eval-mm 0.4.1 does: compared with eval-mm's own
parse_score, HeronBenchScorer.aggregate and LlmAsaJudgeScorer (fed fixed outputs by a
stand-in chat client, since no judge model runs in this test) over the 103 real
Heron-Bench questions' categories."""

import json
import random
import subprocess

import pytest

from asagi_dagster.eval.verdicts import first_digit, heron_pair, heron_score, likert_score
from tests.eval.heron import FIXTURE

EVALMM = """
import json, sys
from eval_mm.metrics.heron_bench_scorer import HeronBenchScorer, parse_score
from eval_mm.metrics.llm_as_a_judge_scorer import LlmAsaJudgeScorer
from eval_mm.metrics.scorer import ScorerConfig

class FixedOutputs:  # stands in for the judge endpoint: returns the given outputs in order
    def __init__(self, outputs):
        self.outputs = list(outputs)
    def batch_generate_chat_response(self, messages, **_):
        taken, self.outputs = self.outputs[:len(messages)], self.outputs[len(messages):]
        return taken

if __name__ == "__main__":
    case = json.load(sys.stdin)
    parsed = [parse_score(o) for o in case["heron_outputs"]]
    docs = [{"category": c} for c in case["categories"]]
    heron = HeronBenchScorer(ScorerConfig(docs=docs)).aggregate(parsed)
    likert_outputs = case["likert_outputs"]
    config = ScorerConfig(docs={"input_text": ["q"] * len(likert_outputs)}, client=FixedOutputs(likert_outputs), judge_model="fixed", batch_size=7)
    scorer = LlmAsaJudgeScorer(config)
    likert = scorer.score(["a"] * len(likert_outputs), ["p"] * len(likert_outputs))
    print("RESULT " + json.dumps({"parsed": parsed, "heron": heron.overall_score, "details": dict(heron.details),
                                   "likert": likert, "likert_mean": LlmAsaJudgeScorer.aggregate(likert).overall_score}))
"""


def heron_categories() -> list[str]:
    rows = [json.loads(line) for line in (FIXTURE / "questions_ja.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["category"] for row in sorted(rows, key=lambda r: r["question_id"])]


def heron_outputs(count: int, seed: int) -> list[str]:
    """Judge outputs as judges write them: fenced JSON, bare JSON with prose, control
    characters inside, keys in either order, a missing key, no JSON at all."""
    rng = random.Random(seed)
    shapes = [
        lambda a, b: f'```json\n{{\n    "score_gpt": {b},\n    "score": {a}\n}}\n```',
        lambda a, b: f'Here is my evaluation: {{"score": {a}, "score_gpt": {b}}} Thank you.',
        lambda a, b: f'{{"score_gpt": {b},\t"score": {a},\n"note": "改行\x01あり"}}',
        lambda a, b: f'{{"score": {a}}} and then {{"score": {a}, "score_gpt": {b}}}',
        lambda a, b: '{"score": 7}',
        lambda a, b: "I cannot evaluate this answer.",
        lambda a, b: f'```json\n{{"score": "{a}", "score_gpt": {b}}}\n```',
    ]
    return [rng.choice(shapes)(rng.randint(1, 10), rng.randint(1, 10)) for _ in range(count)]


LIKERT = ["5", "Score: 4", "3/5", "The prediction is good. 4", "わかりません", "", "評価：２", "10", " 1\n"]


def evalmm(python: str, case: dict, tmp_path) -> dict:
    script = tmp_path / "evalmm_judge.py"
    script.write_text(EVALMM)
    run = subprocess.run([python, str(script)], input=json.dumps(case), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("seed", [0, 1])
def test_heron_and_likert_aggregation_equal_evalmm(evalmm_python, tmp_path, seed):
    categories = heron_categories()
    assert len(categories) == 103 and set(categories) == {"conv", "detail", "complex"}
    outputs = heron_outputs(len(categories), seed)
    likert_outputs = LIKERT * 3
    theirs = evalmm(evalmm_python, {"heron_outputs": outputs, "categories": categories, "likert_outputs": likert_outputs}, tmp_path)

    ours_pairs = [heron_pair(o) or (-1, -1) for o in outputs]
    assert [[p["score"], p["score_gpt"]] for p in theirs["parsed"]] == [list(p) for p in ours_pairs]
    ours = heron_score(categories, outputs)
    assert ours.score == pytest.approx(theirs["heron"], abs=1e-9)
    for category in ("conv", "detail", "complex"):
        assert ours.relative[category] == pytest.approx(theirs["details"][f"{category}_rel"], abs=1e-9)
    assert ours.parse_failures == theirs["details"]["parse_error_count"] > 0

    likert = likert_score(likert_outputs)
    assert [first_digit(o) or 0 for o in likert_outputs] == theirs["likert"]
    assert likert.score == pytest.approx(theirs["likert_mean"], abs=1e-12)
    assert likert.parse_failures == 6  # "わかりません" and "" three times each: 0 in the mean, and counted


def test_all_failed_category_is_left_at_zero_and_bad_input_is_an_error():
    result = heron_score(["conv", "detail", "complex"], ['{"score": 8, "score_gpt": 10}', "no json", '{"score": 5, "score_gpt": 5}'])
    assert result.relative == {"conv": 80.0, "detail": 0.0, "complex": 100.0}
    assert result.score == pytest.approx(60.0) and result.parse_failures == 1
    assert heron_pair('{"score": "ten", "score_gpt": 9}') is None  # eval-mm would raise; here it is a failure
    with pytest.raises(ValueError):
        heron_score(["conv"], [])
    with pytest.raises(ValueError):
        likert_score([])
