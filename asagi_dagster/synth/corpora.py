"""The synthesized corpora: which items each asset generates for, and one call that runs
a partition end to end (used by ``python -m asagi_dagster.synth`` in a pod or a local
subprocess).

- ``english_captions``: a detailed English caption per filtered web pair (the VLM sees the image).
- ``ja_captions``: long and short Japanese captions from the English caption (what is
  seen) and the pair's reference text (proper nouns).
- ``synthetic_vqa``: a question target, question and answer from the long caption.
- ``synthetic_mcvqa``: three wrong options for each VQA answer, shuffled in as A-D.
- ``translated_pairs``: an English dataset's captions or QA, in Japanese.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from asagi_dagster.config import AsagiConfig, ConfigError, GeneratorSettings, SynthesisSettings, TaskSettings
from asagi_dagster.core import fingerprint
from asagi_dagster.progress import Progress
from asagi_dagster.storage import Manifest, StageWriter, Storage
from asagi_dagster.synth import schemas
from asagi_dagster.synth.runner import CommittedChunks, TaskPlan, run_chunks
from asagi_dagster.synth.tasks import Item


class LicenceRefused(ConfigError):
    """A generator whose licence does not allow training on its outputs."""


CORPUS_TASKS = {
    "english_captions": ["english_caption"],
    "ja_captions": ["ja_caption_long", "ja_caption_short"],
    "synthetic_vqa": ["vqa"],
    "synthetic_mcvqa": ["mcvqa"],
    "translated_pairs": ["translation"],
}
CORPUS_SCHEMAS = {
    "english_captions": schemas.ENGLISH_CAPTIONS,
    "ja_captions": schemas.JA_CAPTIONS,
    "synthetic_vqa": schemas.SYNTHETIC_VQA,
    "synthetic_mcvqa": schemas.SYNTHETIC_MCVQA,
    "translated_pairs": schemas.TRANSLATED_PAIRS,
}


def synthesis_settings(config: AsagiConfig) -> SynthesisSettings:
    if config.synthesis is None:
        raise ConfigError("the profile has no synthesis section: generators and tasks must be configured to synthesize")
    return config.synthesis


def licence_gate(config: AsagiConfig, asset: str) -> None:
    """Refuse, before anything starts, a generator of this asset whose outputs may not
    train other models (the Asagi rule: no GPT-4-style terms)."""
    for task, settings, generator in _enabled_tasks(config, asset):
        if not generator.outputs_trainable:
            raise LicenceRefused(
                f"{asset}: generator {settings.generator!r} ({generator.model}, licence {generator.licence!r}) does not allow "
                "training other models on its outputs; choose a licence-clean model for synthesis.tasks." + task
            )


def _enabled_tasks(config: AsagiConfig, asset: str) -> Iterator[tuple[str, TaskSettings, GeneratorSettings]]:
    synthesis = synthesis_settings(config)
    for task in CORPUS_TASKS[asset]:
        settings = getattr(synthesis.tasks, task)
        if settings.enabled:
            yield task, settings, synthesis.generators[settings.generator]


class _Generators:
    """Generators by name, each loaded the first time a chunk needs it: a partition with
    nothing to generate (no inputs, or every chunk committed before) loads no model."""

    def __init__(self, config: AsagiConfig, log: Callable[[str], None]):
        self.settings = synthesis_settings(config).generators
        self.log = log
        self.open: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.open:
            from asagi_dagster.engines import open_generator

            settings = self.settings[name]
            self.log(f"loading generator {name} ({settings.model}, backend {settings.backend})")
            self.open[name] = open_generator(settings)
        return self.open[name]

    def close(self) -> None:
        for generator in self.open.values():
            generator.close()


# In a corpus manifest's source: the fingerprint of the inputs and settings it was made from.
MADE_FROM = "made_from"


def run_corpus(config: AsagiConfig, storage: Storage, asset: str, partition: str, inputs: dict[str, str], log: Callable[[str], None] = print) -> Manifest:
    """Generate one partition of a corpus asset from its inputs' data URLs; commits and
    returns its manifest. Resumes from the partition's committed chunks, if any, and
    returns the committed manifest as it is when it was made from the same inputs and
    settings (a retried batch does not generate its finished partitions again)."""
    [manifest] = run_corpora(config, storage, asset, {partition: inputs}, log)
    return manifest


def run_corpora(
    config: AsagiConfig, storage: Storage, asset: str, inputs_by_partition: dict[str, dict[str, str]], log: Callable[[str], None] = print
) -> Iterator[Manifest]:
    """``run_corpus`` for several partitions, one after another, with one set of
    generators: a run over many shards loads each model once. Yields each partition's
    committed manifest as it is done."""
    licence_gate(config, asset)
    generators = _Generators(config, log)
    try:
        for partition, inputs in inputs_by_partition.items():
            yield _run_partition(config, storage, asset, partition, inputs, generators, log)
    finally:
        generators.close()


def _run_partition(
    config: AsagiConfig, storage: Storage, asset: str, partition: str, inputs: dict[str, str], generators: _Generators, log: Callable[[str], None]
) -> Manifest:
    synthesis = synthesis_settings(config)
    enabled = {
        task: TaskPlan(task, settings, settings.generator, generator, lambda name=settings.generator: generators.get(name))
        for task, settings, generator in _enabled_tasks(config, asset)
    }
    key = fingerprint(
        {
            "asset": asset,
            "inputs": {name: storage.identity(url) for name, url in sorted(inputs.items())},
            "plans": {name: [plan.settings.model_dump(), plan.generator_settings.model_dump(), plan.task.prompt.version] for name, plan in enabled.items()},
            "seed": synthesis.seed,
            "chunk_rows": synthesis.chunk_rows,
        }
    )
    before = _committed_with(storage, asset, partition, key)
    if before is not None:  # an earlier attempt of this run's batch committed it
        log(f"{asset} {partition}: committed before from the same inputs and settings, not generated again")
        return before
    checkpoints = CommittedChunks(storage, asset, partition, key)
    log(f"{asset} {partition}")
    with StageWriter(storage, asset, partition, CORPUS_SCHEMAS[asset], schemas.VERSION) as out:
        out.source = {**{name: plan.generator_settings.model for name, plan in enabled.items()}, MADE_FROM: key}
        items = ITEM_SOURCES[asset](storage, inputs, enabled, out)
        progress = Progress(log, f"{asset} {partition}", None, "items", every_s=0)
        run_chunks(
            items,
            out,
            checkpoints,
            synthesis.chunk_rows,
            synthesis.seed,
            on_chunk=lambda index, rows, rejected, resumed: progress.add(
                rows + rejected, f"chunk {index}: {rows} written, {rejected} rejected" + (" (committed before, not generated again)" if resumed else "")
            ),
        )
    storage.write_manifest(out.manifest)  # committed now: a later partition of the batch may fail
    checkpoints.clear()
    return out.manifest


def _committed_with(storage: Storage, asset: str, partition: str, key: str) -> Manifest | None:
    if not storage.exists(storage.manifest_path(asset, partition)):
        return None
    manifest = storage.read_manifest(asset, partition)
    return manifest if manifest.source.get(MADE_FROM) == key else None


def _rows(storage: Storage, url: str, columns: list[str]) -> Iterator[dict]:
    return storage.iter_rows(storage.strip_protocol(url), columns)


def _english_caption_items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("english_caption")
    if plan is None:
        return
    wanted = {row["pair_id"] for row in _rows(storage, inputs["filtered_pairs"], ["pair_id"])}
    for batch in storage.iter_batches(storage.strip_protocol(inputs["pair_images"]), ["pair_id", "bytes"], batch_rows=16):
        for image in batch.to_pylist():
            if image["pair_id"] in wanted:
                wanted.discard(image["pair_id"])
                yield plan, Item(image["pair_id"], image["pair_id"], {}, image=image["bytes"])
    for pair_id in sorted(wanted):  # kept by the filters but gone from the image file
        out.count_in()
        out.reject(pair_id, "image_missing", "not in the shard's pair_images file")


def _ja_caption_items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    references = {row["pair_id"]: row["reference_text"] for row in _rows(storage, inputs["reference_texts"], ["pair_id", "reference_text"])}
    captions = {row["pair_id"]: row["caption"] for row in _rows(storage, inputs["filtered_pairs"], ["pair_id", "caption"])}
    for row in _rows(storage, inputs["english_captions"], ["pair_id", "text"]):
        pair_id = row["pair_id"]
        # The reference text when the page had one for the image, else the pair's own caption (its alt text).
        reference, source = (references[pair_id], "reference_text") if references.get(pair_id) else (captions.get(pair_id) or "", "caption")
        fields = {"english_caption": row["text"], "reference_text": reference}
        for length in ("long", "short"):
            plan = plans.get(f"ja_caption_{length}")
            if plan is not None:
                yield plan, Item(f"{pair_id}#{length}", pair_id, fields, carry={"length": length, "reference_source": source})


def _vqa_items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("vqa")
    if plan is None:
        return
    for row in _rows(storage, inputs["ja_captions"], ["pair_id", "length", "text"]):
        if row["length"] == "long":
            yield plan, Item(row["pair_id"], row["pair_id"], {"ja_caption": row["text"]})


def _mcvqa_items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("mcvqa")
    if plan is None:
        return
    captions = {row["pair_id"]: row["text"] for row in _rows(storage, inputs["ja_captions"], ["pair_id", "length", "text"]) if row["length"] == "long"}
    for row in _rows(storage, inputs["synthetic_vqa"], ["pair_id", "question", "text"]):
        fields = {"ja_caption": captions.get(row["pair_id"], ""), "question": row["question"], "answer": row["text"]}
        yield plan, Item(row["pair_id"], row["pair_id"], fields, carry={"correct_answer": row["text"]})


def _translation_items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("translation")
    if plan is None:
        return
    kept = {row["pair_id"] for row in _rows(storage, inputs["filtered_dataset_pairs"], ["pair_id"])}
    for row in _rows(storage, inputs["dataset_pairs"], ["pair_id", "text", "question", "answer"]):
        if row["pair_id"] not in kept:
            continue
        if row["text"]:
            english, kind = row["text"], "caption"
        else:
            english, kind = f"質問: {row['question']}\n回答: {row['answer']}", "qa"
        yield plan, Item(row["pair_id"], row["pair_id"], {"english": english}, carry={"kind": kind, "source_text": english})


ITEM_SOURCES = {
    "english_captions": _english_caption_items,
    "ja_captions": _ja_caption_items,
    "synthetic_vqa": _vqa_items,
    "synthetic_mcvqa": _mcvqa_items,
    "translated_pairs": _translation_items,
}
