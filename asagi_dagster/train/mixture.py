"""Stage mixtures: every candidate text of every image, one kept per image.

An image can have an alt text, a reference text, long and short synthesized captions,
a VQA and an MCVQA item; Asagi trains on one of them per image. Which one is drawn
with the stage's source weights by an exponential race keyed on (seed, image, text):
the result depends on nothing but the seed and the candidates, not on reading order.

Work goes partition by partition (a WARC shard, an open dataset): deduplication has
already kept each image in one partition only, so grouping by image within a partition
is grouping by image overall, and memory stays at one partition's texts.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from asagi_dagster import catalog
from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.train.template import CAPTION_INSTRUCTIONS, mcvqa_instruction

VERSION = 1
MIXTURE = pa.schema(
    [
        ("example_id", pa.string()),  # <source>:<record id in the source>
        ("source", pa.string()),  # the mixture source name
        ("pair_id", pa.string()),  # the image's pair in the filtered split
        ("image_sha256", pa.string()),
        ("image_phash", pa.int64()),  # for the decontamination audit
        ("vg_image_id", pa.int64()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("candidates", pa.int32()),  # texts this image had; the others are rejected as other_text_drawn
        ("bytes", pa.large_binary()),  # the image
    ]
)


@dataclass(frozen=True)
class Candidate:
    example_id: str
    source: str
    pair_id: str
    instruction: str
    response: str


@dataclass
class WebShard:
    """A WARC shard's data URLs; a synthesized corpus the shard has not got is None."""

    name: str
    filtered_pairs: str
    pair_images: str
    reference_texts: str | None = None
    ja_captions: str | None = None
    synthetic_vqa: str | None = None
    synthetic_mcvqa: str | None = None


@dataclass
class Dataset:
    """An open dataset's data URLs: its filtered pairs, its raw pairs (texts and bytes),
    and its translation when it is an English dataset."""

    name: str
    language: str
    filtered_pairs: str
    dataset_pairs: str
    translated_pairs: str | None = None


def caption_instruction(key: str, length: str = "short") -> str:
    """A caption instruction from Asagi-style paraphrases, fixed per example."""
    options = CAPTION_INSTRUCTIONS[length]
    return options[_digest_int(key) % len(options)]


def _reader(storage: Storage):
    return lambda url, columns: storage.iter_rows(storage.strip_protocol(url), columns)


def web_candidates(storage: Storage, shard: WebShard, weights: dict[str, float]) -> Iterator[Candidate]:
    read = _reader(storage)
    if "web_alt_texts" in weights:
        for row in read(shard.filtered_pairs, ["pair_id", "caption"]):
            yield Candidate(f"web_alt_texts:{row['pair_id']}", "web_alt_texts", row["pair_id"], caption_instruction(row["pair_id"]), row["caption"])
    if "reference_texts" in weights and shard.reference_texts:
        for row in read(shard.reference_texts, ["pair_id", "reference_text", "reference_source"]):
            if row["reference_source"] == "sentence":  # else it is the alt text again
                yield Candidate(
                    f"reference_texts:{row['pair_id']}", "reference_texts", row["pair_id"], caption_instruction(row["pair_id"]), row["reference_text"]
                )
    if "ja_captions" in weights and shard.ja_captions:
        for row in read(shard.ja_captions, ["item_id", "pair_id", "text", "length"]):
            yield Candidate(f"ja_captions:{row['item_id']}", "ja_captions", row["pair_id"], caption_instruction(row["item_id"], row["length"]), row["text"])
    if "synthetic_vqa" in weights and shard.synthetic_vqa:
        for row in read(shard.synthetic_vqa, ["item_id", "pair_id", "question", "text"]):
            yield Candidate(f"synthetic_vqa:{row['item_id']}", "synthetic_vqa", row["pair_id"], row["question"], row["text"])
    if "synthetic_mcvqa" in weights and shard.synthetic_mcvqa:
        for row in read(shard.synthetic_mcvqa, ["item_id", "pair_id", "question", "text"]):
            yield Candidate(f"synthetic_mcvqa:{row['item_id']}", "synthetic_mcvqa", row["pair_id"], mcvqa_instruction(row["question"]), row["text"])


def dataset_candidates(storage: Storage, dataset: Dataset, weights: dict[str, float]) -> Iterator[Candidate]:
    read = _reader(storage)
    if "dataset_pairs" in weights and dataset.language == "ja":
        for row in read(dataset.dataset_pairs, ["pair_id", "text", "question", "answer"]):
            if row["text"]:
                yield Candidate(f"dataset_pairs:{row['pair_id']}", "dataset_pairs", row["pair_id"], caption_instruction(row["pair_id"]), row["text"])
            else:
                yield Candidate(f"dataset_pairs:{row['pair_id']}", "dataset_pairs", row["pair_id"], row["question"], row["answer"])
    if "translated_pairs" in weights and dataset.translated_pairs:
        for row in read(dataset.translated_pairs, ["item_id", "pair_id", "kind", "question", "text"]):
            instruction = caption_instruction(row["item_id"]) if row["kind"] == "caption" else row["question"]
            yield Candidate(f"translated_pairs:{row['item_id']}", "translated_pairs", row["pair_id"], instruction, row["text"])


def draw_one_per_image(candidates: list[Candidate], images: dict[str, dict], weights: dict[str, float], seed: int) -> tuple[list[Candidate], Counter]:
    """(the drawn candidate of each image, texts per image sha) among candidates whose
    pair is in ``images`` (pair id -> image facts)."""
    by_image: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_image[images[candidate.pair_id]["image_sha256"]].append(candidate)
    # Exponential race: the minimum of -ln(u)/w is candidate i with probability w_i / sum(w).
    drawn = [min(group, key=lambda c, sha=sha: -math.log(_uniform(f"{seed}|{sha}|{c.example_id}")) / weights[c.source]) for sha, group in by_image.items()]
    return drawn, Counter({sha: len(group) for sha, group in by_image.items()})


def write_partition(
    storage: Storage,
    out: StageWriter,
    candidates: list[Candidate],
    images: dict[str, dict],
    bytes_url: str,
    weights: dict[str, float],
    seed: int,
    per_source: Counter,
) -> None:
    """Draw one text per image among ``candidates`` and write it with the image's bytes
    (streamed from ``bytes_url``, a file with pair_id and bytes); reject every other text."""
    out.count_in(len(candidates))
    usable = []
    for candidate in candidates:
        if candidate.pair_id not in images:
            out.reject(candidate.example_id, "pair_not_in_filtered_split", f"{candidate.pair_id} was filtered out after this text was made")
        elif not (candidate.response or "").strip() or not (candidate.instruction or "").strip():
            out.reject(candidate.example_id, "empty_text", f"instruction {candidate.instruction!r}, response {candidate.response!r}")
        else:
            usable.append(candidate)
    drawn, texts_per_image = draw_one_per_image(usable, images, weights, seed)
    drawn_ids = {c.example_id for c in drawn}
    for candidate in usable:
        if candidate.example_id not in drawn_ids:
            out.reject(candidate.example_id, "other_text_drawn", f"one text per image: {candidate.pair_id}'s image kept another")
    wanted: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in drawn:
        wanted[candidate.pair_id].append(candidate)
    for batch in storage.iter_batches(storage.strip_protocol(bytes_url), ["pair_id", "bytes"], batch_rows=64):
        for row in batch.to_pylist():
            for candidate in wanted.pop(row["pair_id"], []):
                image = images[candidate.pair_id]
                out.write(
                    {
                        "example_id": candidate.example_id,
                        "source": candidate.source,
                        "pair_id": candidate.pair_id,
                        "image_sha256": image["image_sha256"],
                        "image_phash": image["image_phash"],
                        "vg_image_id": image["vg_image_id"],
                        "instruction": candidate.instruction,
                        "response": candidate.response,
                        "candidates": texts_per_image[image["image_sha256"]],
                        "bytes": row["bytes"],
                    },
                    size_hint=len(row["bytes"] or b""),
                )
                per_source[candidate.source] += 1
    for pending in wanted.values():
        for candidate in pending:
            out.reject(candidate.example_id, "image_missing", f"{candidate.pair_id} has no bytes in {bytes_url}")


def filtered_images(storage: Storage, filtered_url: str) -> dict[str, dict]:
    """pair id -> the image facts the mixture carries, for the pairs the filters kept."""
    columns = ["pair_id", "image_sha256", "image_phash", "vg_image_id"]
    return {row["pair_id"]: row for row in _reader(storage)(filtered_url, columns)}


def build_mixture(storage: Storage, out: StageWriter, web: list[WebShard], datasets: list[Dataset], weights: dict[str, float], seed: int) -> Counter:
    """Write the mixture of one stage; returns examples per source."""
    per_source: Counter = Counter()
    for shard in web:
        candidates = list(web_candidates(storage, shard, weights))
        write_partition(storage, out, candidates, filtered_images(storage, shard.filtered_pairs), shard.pair_images, weights, seed, per_source)
    for dataset in datasets:
        candidates = list(dataset_candidates(storage, dataset, weights))
        write_partition(storage, out, candidates, filtered_images(storage, dataset.filtered_pairs), dataset.dataset_pairs, weights, seed, per_source)
    return per_source


def _digest_int(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def _uniform(key: str) -> float:
    """A uniform number in (0, 1) fixed by ``key``."""
    return (_digest_int(key) + 0.5) / 2**64


# The assets a mixture draws from.
MIXTURE_INPUTS = (
    "filtered_pairs",
    "pair_images",
    "reference_texts",
    "ja_captions",
    "synthetic_vqa",
    "synthetic_mcvqa",
    "filtered_dataset_pairs",
    "dataset_pairs",
    "translated_pairs",
)


def mixture_inputs(
    storage: Storage, shards: list[str], datasets: dict, translated: list[str], weights: dict[str, float]
) -> tuple[list[WebShard], list[Dataset], list[str]]:
    """(web shards, datasets, missing inputs) from what is committed under the root.

    ``datasets`` is the profile's sources.datasets; ``translated`` the datasets with a
    translation. A shard or dataset whose filtered split is not there is skipped; a
    corpus a weighted source needs but a partition lacks is listed as missing."""
    # One catalog read for every input's data URL, not a manifest file per shard and asset.
    urls = catalog.read_latest(storage, ["data_url"], MIXTURE_INPUTS)
    found = {(a, p): u for a, p, u in zip(*(urls.column(c).to_pylist() for c in ("asset", "partition", "data_url")))}

    def url(asset: str, partition: str) -> str | None:
        return found.get((asset, partition))

    missing: list[str] = []

    def wanted(source: str, asset: str, partition: str) -> str | None:
        if source not in weights:
            return None
        found = url(asset, partition)
        if found is None:
            missing.append(f"{asset}/{partition}")
        return found

    web = []
    for shard in shards:
        filtered, images = url("filtered_pairs", shard), url("pair_images", shard)
        if filtered is None or images is None:
            missing.append(f"filtered_pairs/{shard}")
            continue
        web.append(
            WebShard(
                shard,
                filtered,
                images,
                reference_texts=wanted("reference_texts", "reference_texts", shard),
                ja_captions=wanted("ja_captions", "ja_captions", shard),
                synthetic_vqa=wanted("synthetic_vqa", "synthetic_vqa", shard),
                synthetic_mcvqa=wanted("synthetic_mcvqa", "synthetic_mcvqa", shard),
            )
        )
    sets = []
    for name, source in sorted(datasets.items()):
        filtered, pairs = url("filtered_dataset_pairs", name), url("dataset_pairs", name)
        if filtered is None or pairs is None:
            missing.append(f"filtered_dataset_pairs/{name}")
            continue
        translation = wanted("translated_pairs", "translated_pairs", name) if name in translated else None
        sets.append(Dataset(name, source.language, filtered, pairs, translation))
    return web, sets, missing
