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

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa

from asagi_dagster import catalog
from asagi_dagster.core import digest_int
from asagi_dagster.storage import Manifest, StageWriter, Storage
from asagi_dagster.train.sources import MIXTURE_SOURCES, Candidate, check_mixture

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


@dataclass
class MixturePartition:
    """A WARC shard's or an open dataset's data URLs: its filtered split, the file with
    its image bytes, and each weighted source's asset (None: the partition has not got it)."""

    name: str
    filtered_pairs: str
    images: str  # a file with pair_id and bytes
    texts: dict[str, str | None] = field(default_factory=dict)  # source name -> its asset's data URL


def candidates(storage: Storage, partition: MixturePartition, weights: dict[str, float]) -> Iterator[Candidate]:
    """Every candidate text of the partition's images, source by source in registry order."""
    read = _reader(storage)
    for source in MIXTURE_SOURCES.values():
        url = partition.texts.get(source.name)
        if source.name in weights and url:
            for row in read(url, list(source.columns)):
                candidate = source.candidate(row)
                if candidate is not None:
                    yield candidate


def _reader(storage: Storage):
    return lambda url, columns: storage.iter_rows(storage.strip_protocol(url), columns)


def draw_one_per_image(candidates: list[Candidate], images: dict[str, dict], weights: dict[str, float], seed: int) -> tuple[list[Candidate], Counter]:
    """(the drawn candidate of each image, texts per image sha) among candidates whose
    pair is in ``images`` (pair id -> image facts)."""
    by_image: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_image[images[candidate.pair_id]["image_sha256"]].append(candidate)

    # Exponential race: the minimum of -ln(u)/w is candidate i with probability w_i / sum(w).
    def arrival(sha: str, candidate: Candidate) -> float:
        return -math.log(_uniform(f"{seed}|{sha}|{candidate.example_id}")) / weights[candidate.source]

    drawn = [min(group, key=partial(arrival, sha)) for sha, group in by_image.items()]
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


def build_mixture(storage: Storage, out: StageWriter, partitions: list[MixturePartition], weights: dict[str, float], seed: int) -> Counter:
    """Write the mixture of one stage; returns examples per source."""
    per_source: Counter = Counter()
    for partition in partitions:
        found = list(candidates(storage, partition, weights))
        write_partition(storage, out, found, filtered_images(storage, partition.filtered_pairs), partition.images, weights, seed, per_source)
    return per_source


def _uniform(key: str) -> float:
    """A uniform number in (0, 1) fixed by ``key``."""
    return (digest_int(key) + 0.5) / 2**64


# The assets a mixture draws from: each partition's filtered split and image bytes, and the sources' assets.
MIXTURE_INPUTS = tuple(
    dict.fromkeys(["filtered_pairs", "pair_images", "filtered_dataset_pairs", "dataset_pairs", *(s.asset for s in MIXTURE_SOURCES.values())])
)


def mixture_inputs(
    storage: Storage, shards: list[str], datasets: dict, translated: list[str], weights: dict[str, float]
) -> tuple[list[MixturePartition], list[str]]:
    """(partitions: the web shards, then the datasets; missing inputs) from what is
    committed under the root.

    ``datasets`` is the profile's sources.datasets; ``translated`` the datasets with a
    translation. A shard or dataset whose filtered split is not there is skipped; an
    asset a weighted source needs but a partition lacks is listed as missing."""
    # One catalog read for every input's data URL, not a manifest file per shard and asset.
    urls = catalog.read_latest(storage, ["data_url"], MIXTURE_INPUTS)
    found = {(a, p): u for a, p, u in zip(*(urls.column(c).to_pylist() for c in ("asset", "partition", "data_url")))}
    missing: list[str] = []

    def texts(kind: str, name: str, language: str | None = None) -> dict[str, str | None]:
        by_source: dict[str, str | None] = {}
        for source in MIXTURE_SOURCES.values():
            if source.partitions != kind or source.name not in weights:
                continue
            if (source.japanese_datasets_only and language != "ja") or (source.translated_only and name not in translated):
                continue
            url = found.get((source.asset, name))
            if url is None:
                missing.append(f"{source.asset}/{name}")
            by_source[source.name] = url
        return by_source

    partitions = []
    for shard in shards:
        filtered, images = found.get(("filtered_pairs", shard)), found.get(("pair_images", shard))
        if filtered is None or images is None:
            missing.append(f"filtered_pairs/{shard}")
            continue
        partitions.append(MixturePartition(shard, filtered, images, texts("shards", shard)))
    for name, source in sorted(datasets.items()):
        filtered, pairs = found.get(("filtered_dataset_pairs", name)), found.get(("dataset_pairs", name))
        if filtered is None or pairs is None:
            missing.append(f"filtered_dataset_pairs/{name}")
            continue
        partitions.append(MixturePartition(name, filtered, pairs, texts("datasets", name, source.language)))
    return partitions, missing


MISSING_SHOWN = 20  # missing inputs named in a mixture's manifest, metadata and log (all are counted)


@dataclass
class StageMixture:
    manifest: Manifest
    per_source: Counter  # examples written per source
    missing: list[str]  # inputs a weighted source needs that are not materialized ("<asset>/<partition>")


def write_stage_mixture(
    storage: Storage, stage: str, weights: dict[str, float], seed: int, shards: list[str], datasets: dict, translated: list[str]
) -> StageMixture:
    """Commit ``<stage>_mixture`` from everything materialized under the root (the
    registered ``shards``; the profile's ``datasets``, ``translated`` of them); its
    manifest's source records the examples per source and how many inputs are missing
    (the first ``MISSING_SHOWN`` by name)."""
    check_mixture(stage, weights)
    partitions, missing = mixture_inputs(storage, shards, datasets, translated, weights)
    with StageWriter(storage, f"{stage}_mixture", None, MIXTURE, VERSION) as out:
        per_source = build_mixture(storage, out, partitions, weights, seed)
        # A count and the first few, not the list: during a crawl's ingest tens of thousands of shards lack their inputs.
        missing_shown = {"missing_inputs": str(len(missing)), "missing_inputs_first": ",".join(missing[:MISSING_SHOWN])}
        out.source = {**{f"examples.{s}": str(per_source.get(s, 0)) for s in weights}, **missing_shown}
    return StageMixture(out.manifest, per_source, missing)
