"""ROUGE-L parity with eval-mm 0.4.1 itself (its own RougeLScorer, run in .venv-evalmm on
Python 3.12), on the Heron-Bench fixture's three real answer sets and on edge cases."""

import json
import subprocess

import pytest

from asagi_dagster.eval.metrics import normalize, rougel_scores, rougel_task_score
from tests.eval.heron import MODELS, reference_and_answers

EVALMM_SCORES = """
import json, sys
from eval_mm.metrics.rougel_scorer import RougeLScorer

if __name__ == "__main__":  # the scorer starts a process pool
    pairs = json.load(sys.stdin)
    scores = RougeLScorer.score([p[0] for p in pairs], [p[1] for p in pairs])
    print(json.dumps([float(s) for s in scores]))
"""

EDGE_CASES = [
    ("猫が好きです😺", "猫が好きです"),  # emoji removed
    ("🎉🎉", "🎉"),  # nothing left on either side
    ("ＡＢＣ１２３の写真", "ABC123の写真"),  # full-width folded by NFKC
    ("ｶﾀｶﾅ", "カタカナ"),  # half-width kana
    ("", "何か答える"),
    ("何か答える", ""),
    ("", ""),
    ("   \n\t ", "空白だけ"),
    ("東京　タワー は\n高い", "東京タワーは 高い"),  # ideographic and mixed whitespace
    ("✂️✈️ 旅行", "旅行"),  # dingbats in eval-mm's extra range
    ("富士山が見える湖の景色です。" * 400, "富士山の見える湖。" * 300),  # very long texts
    ("たかしが公園で遊んでいた。", "たかしが公園にいたようだ。"),  # eval-mm's own example: 66.67
]


def evalmm_scores(python: str, pairs: list[tuple[str, str]], tmp_path) -> list[float]:
    script = tmp_path / "evalmm_scores.py"
    script.write_text(EVALMM_SCORES)
    run = subprocess.run([python, str(script)], input=json.dumps(pairs), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_scores_equal_evalmm_on_heron_answers_and_edge_cases(evalmm_python, tmp_path):
    pairs = [pair for model in MODELS for pair in zip(*reference_and_answers(model))] + EDGE_CASES
    assert len(pairs) == 3 * 103 + len(EDGE_CASES)
    theirs = evalmm_scores(evalmm_python, pairs, tmp_path)
    ours = rougel_scores([p[0] for p in pairs], [p[1] for p in pairs])
    assert len(ours) == len(theirs)
    for (ref, pred), a, b in zip(pairs, ours, theirs):
        assert abs(a - b) <= 1e-9, (ref[:40], pred[:40], a, b)
    # Not a vacuous match: the answer sets score differently and the edge cases span 0..100.
    by_model = [rougel_task_score(*reference_and_answers(model)) for model in MODELS]
    assert len({round(s, 6) for s in by_model}) == 3 and all(10 < s < 60 for s in by_model)
    edge = ours[-len(EDGE_CASES) :]
    assert edge[0] == 100.0 and edge[4] == edge[5] == edge[6] == 0.0 and edge[-1] == pytest.approx(66.67, abs=0.01)


def test_normalisation_and_errors():
    assert normalize("ＡＢＣ　１２３😺\n") == "ABC 123"
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        rougel_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no pairs"):
        rougel_task_score([], [])
