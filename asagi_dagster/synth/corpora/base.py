"""What a synthesized corpus is: the asset it becomes, the tasks that write it, the
inputs it reads, its row schema, and the function that turns its inputs into items.

Every row says where it came from: the source pair, the generator (model id, revision,
licence), the prompt (id, version), the sampling settings and the seed of the attempt
that passed validation (``PROVENANCE``, first in every corpus's schema).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth.tasks import Item, Task

if TYPE_CHECKING:
    from asagi_dagster.synth.runner import TaskPlan

VERSION = 1

PROVENANCE = [
    ("item_id", pa.string()),
    ("pair_id", pa.string()),  # the source pair (web pair or dataset record)
    ("text", pa.string()),  # the training text: a caption, an answer, an option letter
    ("task", pa.string()),  # the prompt library's task name
    ("generator", pa.string()),  # its name in synthesis.generators
    ("model", pa.string()),
    ("revision", pa.string()),
    ("licence", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_version", pa.int32()),
    ("sampling", pa.string()),  # JSON of temperature, top_p, max_tokens, repetition_penalty
    ("seed", pa.int64()),
    ("attempt", pa.int32()),  # which try passed (1 = the first)
]

# (storage, the partition's input data URLs by asset, the enabled tasks' plans by name, the
# output writer: for rejecting an input that gives no item) -> (plan, item) to generate.
ItemSource = Callable[[Storage, dict[str, str], dict[str, "TaskPlan"], StageWriter], Iterator[tuple["TaskPlan", Item]]]


@dataclass(frozen=True)
class Corpus:
    name: str  # the asset
    description: str  # the asset's description in the UI
    tasks: tuple[Task, ...]
    inputs: tuple[str, ...]  # the assets it reads, by the names ``items`` finds them under
    schema: pa.Schema
    items: ItemSource
    # "shards": per WARC shard, like its inputs; "datasets": per English dataset the profile translates.
    partitions: Literal["shards", "datasets"] = "shards"
    rejections: tuple[str, ...] = ()  # reasons ``items`` gives, beside the tasks' (validate.REASONS)


def rows(storage: Storage, url: str, columns: list[str]) -> Iterator[dict]:
    return storage.iter_rows(storage.strip_protocol(url), columns)
