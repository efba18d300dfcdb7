"""ROUGE-L as eval-mm 0.4.1 scores it, per sample and for a task.

eval-mm tokenizes with MeCab (fugashi, ``-Owakati``, unidic-lite) after removing emoji,
NFKC normalisation and collapsing whitespace, then takes Google rouge_score's rougeL
F-measure x 100 per pair; a task's score is the plain mean. It scores each pair in a
fresh process pool task through a one-sample bootstrap aggregator, whose middle value is
that pair's score: here the same arithmetic runs in this process with one tagger, so the
numbers are identical without a process pool per call.

Only fugashi, unidic-lite, rouge-score and emoji are imported: the module also runs in
the eval-mm environment the parity test and the benchmark compare against.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# The ranges eval-mm strips on top of emoji.is_emoji (emoticons, pictographs, transport,
# flags, dingbats), kept as they are there: parity includes the odd ones out.
_EMOJI_RANGES = re.compile("[\U0001f600-\U0001f64f\U0001f300-\U0001f5ff\U0001f680-\U0001f6ff\U0001f1e0-\U0001f1ff\U00002702-\U000027b0]+", flags=re.UNICODE)


class MecabWords:
    """The tokenizer rouge_score calls: normalised text split into MeCab words."""

    def __init__(self):
        from fugashi import Tagger

        self.tagger = Tagger("-Owakati")

    def tokenize(self, text: str) -> list[str]:
        return self.tagger.parse(normalize(text)).split()


def normalize(text: str) -> str:
    import emoji

    text = "".join("" if emoji.is_emoji(c) else c for c in text)
    text = _EMOJI_RANGES.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=MecabWords())


def rougel_scores(refs: list[str], preds: list[str]) -> list[float]:
    """Per-pair ROUGE-L F1 x 100, as eval-mm 0.4.1's RougeLScorer.score."""
    if len(refs) != len(preds):
        raise ValueError(f"{len(refs)} references but {len(preds)} predictions")
    scorer = _scorer()
    return [scorer.score(ref, pred)["rougeL"].fmeasure * 100 for ref, pred in zip(refs, preds)]


def rougel_task_score(refs: list[str], preds: list[str]) -> float:
    """The task's score: the mean of the per-pair scores (eval-mm's aggregate)."""
    scores = rougel_scores(refs, preds)
    if not scores:
        raise ValueError("no pairs to score")
    return sum(scores) / len(scores)
