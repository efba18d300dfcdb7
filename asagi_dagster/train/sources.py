"""The sources a stage mixture can draw texts from, registered here by name (the keys of
a profile's ``training.<stage>.mixture``).

A source reads one asset of a partition, a WARC shard or an open dataset, and makes a
row of it into a candidate text for the row's image. A new synthesized corpus becomes
trainable with one entry below; its asset then joins the mixtures' Dagster deps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from asagi_dagster.core import by_name, digest_int
from asagi_dagster.settings import ConfigError
from asagi_dagster.train.template import CAPTION_INSTRUCTIONS, mcvqa_instruction


@dataclass(frozen=True)
class Candidate:
    example_id: str  # <source>:<record id in the source>
    source: str
    pair_id: str
    instruction: str
    response: str


@dataclass(frozen=True)
class MixtureSource:
    name: str
    asset: str  # the asset whose rows it reads (per partition)
    partitions: Literal["shards", "datasets"]
    columns: tuple[str, ...]
    # A row -> its candidate text (None: the row is not a text of this source).
    candidate: Callable[[dict], Candidate | None]
    description: str
    japanese_datasets_only: bool = False  # a dataset's own texts are Japanese only in Japanese datasets
    translated_only: bool = False  # only the datasets the profile translates have this asset


def caption_instruction(key: str, length: str = "short") -> str:
    """A caption instruction from Asagi-style paraphrases, fixed per example."""
    options = CAPTION_INSTRUCTIONS[length]
    return options[digest_int(key) % len(options)]


def _text(source: str, record: str, pair_id: str, instruction: str, response: str) -> Candidate:
    return Candidate(f"{source}:{record}", source, pair_id, instruction, response)


def _web_alt_text(row: dict) -> Candidate:
    return _text("web_alt_texts", row["pair_id"], row["pair_id"], caption_instruction(row["pair_id"]), row["caption"])


def _reference_text(row: dict) -> Candidate | None:
    if row["reference_source"] != "sentence":  # else it is the alt text again
        return None
    return _text("reference_texts", row["pair_id"], row["pair_id"], caption_instruction(row["pair_id"]), row["reference_text"])


def _ja_caption(row: dict) -> Candidate:
    return _text("ja_captions", row["item_id"], row["pair_id"], caption_instruction(row["item_id"], row["length"]), row["text"])


def _vqa(row: dict) -> Candidate:
    return _text("synthetic_vqa", row["item_id"], row["pair_id"], row["question"], row["text"])


def _mcvqa(row: dict) -> Candidate:
    return _text("synthetic_mcvqa", row["item_id"], row["pair_id"], mcvqa_instruction(row["question"]), row["text"])


def _dataset_pair(row: dict) -> Candidate:
    if row["text"]:
        return _text("dataset_pairs", row["pair_id"], row["pair_id"], caption_instruction(row["pair_id"]), row["text"])
    return _text("dataset_pairs", row["pair_id"], row["pair_id"], row["question"], row["answer"])


def _translated_pair(row: dict) -> Candidate:
    instruction = caption_instruction(row["item_id"]) if row["kind"] == "caption" else row["question"]
    return _text("translated_pairs", row["item_id"], row["pair_id"], instruction, row["text"])


MIXTURE_SOURCES: dict[str, MixtureSource] = by_name(
    MixtureSource("web_alt_texts", "filtered_pairs", "shards", ("pair_id", "caption"), _web_alt_text, "filtered web pairs: alt / figcaption / title"),
    MixtureSource(
        "reference_texts",
        "reference_texts",
        "shards",
        ("pair_id", "reference_text", "reference_source"),
        _reference_text,
        "the page sentence closest to the image",
    ),
    MixtureSource(
        "ja_captions", "ja_captions", "shards", ("item_id", "pair_id", "text", "length"), _ja_caption, "synthesized long and short Japanese captions"
    ),
    MixtureSource("synthetic_vqa", "synthetic_vqa", "shards", ("item_id", "pair_id", "question", "text"), _vqa, "synthesized VQA"),
    MixtureSource("synthetic_mcvqa", "synthetic_mcvqa", "shards", ("item_id", "pair_id", "question", "text"), _mcvqa, "synthesized multiple-choice VQA"),
    MixtureSource(
        "dataset_pairs",
        "dataset_pairs",
        "datasets",
        ("pair_id", "text", "question", "answer"),
        _dataset_pair,
        "Japanese open datasets as filtered: captions and question-answer pairs",
        japanese_datasets_only=True,
    ),
    MixtureSource(
        "translated_pairs",
        "translated_pairs",
        "datasets",
        ("item_id", "pair_id", "kind", "question", "text"),
        _translated_pair,
        "English datasets translated into Japanese",
        translated_only=True,
    ),
)


def check_mixture(stage: str, weights: Iterable[str]) -> None:
    """Every source a stage's mixture names is registered."""
    unknown = [name for name in weights if name not in MIXTURE_SOURCES]
    if unknown:
        raise ConfigError(f"training.{stage}.mixture: {', '.join(unknown)}: not a mixture source (known: {', '.join(MIXTURE_SOURCES)})")
