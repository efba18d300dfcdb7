"""Checks on generated text, and parsing of the structured answers (VQA, multiple choice).

Each check raises ``Invalid(reason, detail)``; the runner retries the item with another
seed and, after the last attempt, rejects it with that reason. Nothing here is loosened
for weak models: the embedded default's random tiny models fail most checks, honestly.
"""

from __future__ import annotations

import re
import unicodedata

from asagi_dagster.synth.settings import TaskSettings


class Invalid(ValueError):
    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f々〆ヶ]")

# Captions must describe what is seen, not transcribe writing (the VLM cannot read
# Japanese reliably, so transcriptions are mostly invented).
_TEXT_IN_IMAGE = re.compile(
    "|".join(
        [
            r"と(書|描|記)かれ",
            r"と(書|記)して",
            r"(文字|文章|テキスト|ロゴ|看板|ラベル)(には|に|が)「",
            r"「[^」]*」という(文字|文言|表示|看板|ロゴ)",
            r"(文字|テキスト)が(書|記|印刷|表示)",
            r"\b(text|sign|label|caption|logo|banner)s?\b[^.]{0,40}\b(reads?|says?|saying|spells?|written)\b",
            r"\bthe (words?|letters?|text)\b",
            r"\b(reads?|saying)\s*[\"“']",
        ]
    ),
    re.I,
)

# A role marker or a template heading in an answer means the model continued the
# conversation or repeated the prompt instead of answering.
_ROLE_MARKERS = re.compile(r"<\|?(system|user|assistant|im_start|im_end)\|?>|^\s*(###\s*)?(指示|応答|Instruction|Response)\s*[:：]", re.M)


def japanese_ratio(text: str) -> float:
    """Kana and kanji as a share of the letters (digits, punctuation, spaces not counted)."""
    return _share_of_letters(text, lambda ch: _JAPANESE.match(ch) is not None)


def latin_ratio(text: str) -> float:
    return _share_of_letters(text, lambda ch: "a" <= ch.lower() <= "z")


def _share_of_letters(text: str, counts) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum(1 for ch in letters if counts(ch)) / len(letters) if letters else 0.0


def normalized(text: str) -> str:
    """The form two outputs are compared in for duplicates and option clashes."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split()).rstrip("。.")


def check_text(text: str, settings: TaskSettings, *, japanese: bool, echo_markers: list[str]) -> str:
    """The common checks; returns the text stripped."""
    text = text.strip()
    if not text:
        raise Invalid("empty")
    check_length(text, settings)
    if _ROLE_MARKERS.search(text):
        raise Invalid("prompt_echo", "a chat role or template heading in the output")
    for marker in echo_markers:
        if marker in text:
            raise Invalid("prompt_echo", marker)
    ratio = japanese_ratio(text) if japanese else latin_ratio(text)
    if ratio < settings.min_language_ratio:
        language, letters = ("japanese", "kana or kanji") if japanese else ("english", "Latin")
        raise Invalid(f"not_{language}", f"{ratio:.2f} of the letters are {letters} (at least {settings.min_language_ratio} needed)")
    if (match := _TEXT_IN_IMAGE.search(text)) is not None:
        raise Invalid("mentions_image_text", match.group(0))
    return text


def check_length(text: str, settings: TaskSettings) -> None:
    if len(text) < settings.min_chars:
        raise Invalid("too_short", f"{len(text)} characters (at least {settings.min_chars})")
    if len(text) > settings.max_chars:
        raise Invalid("too_long", f"{len(text)} characters (at most {settings.max_chars})")


def check_source_ratio(text: str, source: str, bounds: tuple[float, float]) -> None:
    """A translation far longer or shorter than its source added or dropped content."""
    ratio = len(text) / max(len(source), 1)
    low, high = bounds
    if not low <= ratio <= high:
        raise Invalid("length_mismatch", f"{len(text)} characters for a {len(source)}-character source (ratio {ratio:.2f}, allowed {low}-{high})")


def labelled_fields(text: str, labels: list[str]) -> dict[str, str]:
    """``label: value`` lines (full-width colon too), each label exactly once, in order.
    A value may run over several lines until the next label."""
    pattern = re.compile(r"^\s*(" + "|".join(map(re.escape, labels)) + r")\s*[:：]\s*", re.M)
    hits = list(pattern.finditer(text))
    found = [hit.group(1) for hit in hits]
    if found != labels:
        raise Invalid("bad_format", f"expected the lines {' / '.join(labels)}, found {' / '.join(found) or 'none'}")
    values = {}
    for hit, following in zip(hits, hits[1:] + [None]):
        value = text[hit.end() : following.start() if following else len(text)].strip()
        if not value:
            raise Invalid("bad_format", f"{hit.group(1)} is empty")
        values[hit.group(1)] = value
    return values


def parse_vqa(text: str) -> tuple[str, str, str]:
    """(target, question, answer) from the VQA prompt's three labelled lines."""
    values = labelled_fields(text, ["質問対象", "質問", "回答"])
    return values["質問対象"], values["質問"], values["回答"]


def parse_distractors(text: str, answer: str) -> list[str]:
    """Three wrong options, each clearly different from the answer and from each other."""
    values = labelled_fields(text, ["誤答1", "誤答2", "誤答3"])
    options = [values[f"誤答{i}"] for i in (1, 2, 3)]
    right = normalized(answer)
    seen = set()
    for option in options:
        key = normalized(option)
        if key == right or (len(key) >= 2 and (key in right or right in key)):
            raise Invalid("option_matches_answer", option)
        if key in seen:
            raise Invalid("options_repeat", option)
        seen.add(key)
    return options


LETTERS = "ABCD"


def multiple_choice(question: str, answer: str, distractors: list[str], seed: int) -> tuple[str, list[str], str]:
    """(question with ``A. ... B. ...`` options, the options in order, the right letter).
    The right answer's place is drawn from ``seed``, so it is uniform over A-D and the
    same on a re-run."""
    import random

    options = list(distractors)
    position = random.Random(seed).randrange(len(options) + 1)
    options.insert(position, answer)
    lines = [question] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines), options, LETTERS[position]
