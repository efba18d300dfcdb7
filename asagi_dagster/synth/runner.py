"""Generation in checkpointed chunks, with retries under new seeds.

Items are taken in input order, ``chunk_rows`` at a time. Each finished chunk (its rows
and rejections) is committed atomically under a work folder keyed by everything that
decides the output (inputs, prompts, generators, settings). A run killed mid-partition
re-reads the committed chunks and generates only the rest: no item twice, none lost.
Seeds come from (base seed, task, item, attempt), never from the batch, so a resumed
run writes what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from PIL import Image

from asagi_dagster.core import batches
from asagi_dagster.engines import Generator, Request
from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth.settings import GeneratorSettings, TaskSettings
from asagi_dagster.synth.tasks import Item, Task
from asagi_dagster.synth.validate import Invalid, normalized


@dataclass
class TaskPlan:
    """One task as this run will do it: its settings, generator and who wrote it."""

    task: Task
    settings: TaskSettings
    generator_name: str
    generator_settings: GeneratorSettings
    open_generator: Callable[[], Generator]  # opens (or reuses) the model on first need

    @property
    def name(self) -> str:
        return self.task.name

    def provenance(self) -> dict:
        g = self.generator_settings
        prompt = self.task.prompt
        return {
            "task": self.name,
            "generator": self.generator_name,
            "model": g.model,
            "revision": g.revision,
            "licence": g.licence,
            "prompt_id": prompt.id,
            "prompt_version": prompt.version,
            "sampling": json.dumps(self.settings.sampling.model_dump(), sort_keys=True),
        }


@dataclass
class WorkItem:
    plan: TaskPlan
    item: Item
    attempts: int = 0
    image: Image.Image | None = field(default=None, repr=False)


def seed_for(base_seed: int, task: str, item_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{base_seed}\0{task}\0{item_id}\0{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class CommittedChunks:
    """Committed chunks of one partition's run, under ``<root>/_work/<asset>/<partition>/<key>/``."""

    def __init__(self, storage: Storage, asset: str, partition: str, key: str):
        self.storage = storage
        self.parent = storage.path("_work", asset, partition)
        self.folder = f"{self.parent}/{key}"

    def path(self, index: int) -> str:
        return f"{self.folder}/chunk-{index:06d}.json"

    def load(self, index: int, item_ids: list[str]) -> dict | None:
        path = self.path(index)
        if not self.storage.exists(path):
            return None
        chunk = self.storage.read_json(path)
        return chunk if chunk["item_ids"] == item_ids else None  # same key, other inputs: redo

    def save(self, index: int, chunk: dict) -> None:
        self.storage.write_json(self.path(index), chunk)

    def clear(self) -> None:
        """After the final output is committed: the whole partition's work folder goes."""
        if self.storage.exists(self.parent):
            self.storage.fs.rm(self.parent, recursive=True)


def run_chunks(
    items: Iterable[tuple[TaskPlan, Item]],
    out: StageWriter,
    checkpoints: CommittedChunks,
    chunk_rows: int,
    base_seed: int,
    on_chunk: Callable[[int, int, int, bool], None] = lambda index, rows, rejected, resumed: None,
) -> None:
    """Generate for every item, write rows and rejections to ``out`` in input order."""
    seen: set[str] = set()  # normalized accepted texts, per task: duplicates are retried
    iterator = iter(items)
    for index, chunk in enumerate(batches(iterator, chunk_rows)):
        item_ids = [item.item_id for _, item in chunk]
        done = checkpoints.load(index, item_ids)
        resumed = done is not None
        if done is None:
            done = _generate_chunk(chunk, seen, base_seed)
            done["item_ids"] = item_ids
            checkpoints.save(index, done)
        else:
            seen.update(_seen_key(row["task"], row["text"]) for row in done["rows"])
        out.count_in(len(item_ids))
        for row in done["rows"]:
            out.write(row)
        for rejection in done["rejections"]:
            out.reject(rejection["record_id"], rejection["reason"], rejection["detail"])
        on_chunk(index, len(done["rows"]), len(done["rejections"]), resumed)


def _seen_key(task: str, text: str) -> str:
    return f"{task}\0{normalized(text)}"


def _generate_chunk(chunk: list[tuple[TaskPlan, Item]], seen: set[str], base_seed: int) -> dict:
    rows: dict[str, dict] = {}
    rejections: dict[str, dict] = {}
    pending = [WorkItem(plan, item) for plan, item in chunk]
    for work in pending:
        if work.plan.task.image:
            try:
                work.image = Image.open(io.BytesIO(work.item.image or b"")).convert("RGB")  # no bytes: unreadable too
            except Exception as exc:  # a pair image that no longer decodes
                rejections[work.item.item_id] = {"record_id": work.item.item_id, "reason": "image_unreadable", "detail": str(exc)}
    pending = [work for work in pending if work.item.item_id not in rejections]
    while pending:
        retry = []
        for plan, works in _by_plan(pending):
            seeds = [seed_for(base_seed, plan.name, work.item.item_id, work.attempts) for work in works]
            requests = [_request(plan, work, seed) for work, seed in zip(works, seeds)]
            for work, seed, generated in zip(works, seeds, plan.open_generator().generate(requests)):
                work.attempts += 1
                try:
                    if generated.text is None:
                        raise Invalid("generation_error", generated.error)
                    fields = plan.task.check(generated.text, work.item, seed, plan.settings)
                    key = _seen_key(plan.name, fields["text"])
                    if key in seen:
                        raise Invalid("duplicate_output", fields["text"][:100])
                except Invalid as invalid:
                    if work.attempts < plan.settings.max_attempts:
                        retry.append(work)
                    else:
                        detail = f"after {work.attempts} attempts: {invalid.detail or ''} | output: {(generated.text or '')[:200]}"
                        rejections[work.item.item_id] = {"record_id": work.item.item_id, "reason": invalid.reason, "detail": detail}
                    continue
                seen.add(key)
                rows[work.item.item_id] = {
                    "item_id": work.item.item_id,
                    "pair_id": work.item.pair_id,
                    **work.item.carry,
                    **fields,
                    **plan.provenance(),
                    "seed": seed,
                    "attempt": work.attempts,
                }
        pending = retry
    order = [item.item_id for _, item in chunk]
    return {"rows": [rows[i] for i in order if i in rows], "rejections": [rejections[i] for i in order if i in rejections]}


def _by_plan(works: list[WorkItem]) -> list[tuple[TaskPlan, list[WorkItem]]]:
    """Works grouped by task, so each generator gets its requests in one call."""
    groups: dict[str, tuple[TaskPlan, list[WorkItem]]] = {}
    for work in works:
        groups.setdefault(work.plan.name, (work.plan, []))[1].append(work)
    return list(groups.values())


def _request(plan: TaskPlan, work: WorkItem, seed: int) -> Request:
    task = plan.task
    g = plan.generator_settings
    messages = task.prompt.messages(work.item.fields, plan.settings.few_shot, image=task.image, image_placeholder=g.prompt_image_placeholder)
    return Request(messages=messages, sampling=plan.settings.sampling, seed=seed, image=work.image)
