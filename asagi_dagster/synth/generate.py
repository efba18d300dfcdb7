"""Running a synthesized corpus (``asagi_dagster.synth.corpora``): the profile's task
settings laid over each task's defaults, the licence gate, and one call that generates a
partition end to end (used by ``python -m asagi_dagster.synth`` in a pod or a local
subprocess).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from asagi_dagster.core import fingerprint
from asagi_dagster.engines import Generator
from asagi_dagster.progress import Progress
from asagi_dagster.settings import ConfigError
from asagi_dagster.storage import Manifest, StageWriter, Storage
from asagi_dagster.synth.corpora import CORPORA, TASKS, VERSION
from asagi_dagster.synth.runner import CommittedChunks, TaskPlan, run_chunks
from asagi_dagster.synth.settings import GeneratorSettings, SynthesisSettings, TaskSettings
from asagi_dagster.synth.tasks import Task


class LicenceRefused(ConfigError):
    """A generator whose licence does not allow training on its outputs."""


def synthesis_settings(synthesis: SynthesisSettings | None) -> SynthesisSettings:
    """The profile's synthesis section, checked against the registered tasks."""
    if synthesis is None:
        raise ConfigError("the profile has no synthesis section: generators and tasks must be configured to synthesize")
    check_tasks(synthesis)
    return synthesis


def check_tasks(synthesis: SynthesisSettings) -> None:
    """Every ``synthesis.tasks`` key is a registered task, every task's settings are valid
    over its defaults, and every enabled task's generator is configured."""
    unknown = sorted(set(synthesis.tasks) - set(TASKS))
    if unknown:
        raise ConfigError(f"synthesis.tasks: {', '.join(unknown)}: not a synthesis task (known: {', '.join(TASKS)})")
    for task in TASKS.values():
        settings = task_settings(synthesis, task)
        if settings.enabled and settings.generator not in synthesis.generators:
            known = ", ".join(sorted(synthesis.generators)) or "none"
            raise ConfigError(f"synthesis.tasks.{task.name}.generator: {settings.generator!r} is not in synthesis.generators (known: {known})")


def task_settings(synthesis: SynthesisSettings, task: Task) -> TaskSettings:
    """The task's defaults with the profile's entry for it laid over them."""
    try:
        return task.settings(synthesis.tasks.get(task.name, {}))
    except ValueError as error:  # pydantic's ValidationError
        raise ConfigError(f"synthesis.tasks.{task.name}: {error}") from None


def licence_gate(synthesis: SynthesisSettings | None, asset: str) -> None:
    """Refuse, before anything starts, a generator of this asset whose outputs may not
    train other models (the Asagi rule: no GPT-4-style terms)."""
    for task, settings, generator in _enabled_tasks(synthesis_settings(synthesis), asset):
        if not generator.outputs_trainable:
            raise LicenceRefused(
                f"{asset}: generator {settings.generator!r} ({generator.model}, licence {generator.licence!r}) does not allow "
                "training other models on its outputs; choose a licence-clean model for synthesis.tasks." + task.name
            )


def _enabled_tasks(synthesis: SynthesisSettings, asset: str) -> Iterator[tuple[Task, TaskSettings, GeneratorSettings]]:
    for task in CORPORA[asset].tasks:
        settings = task_settings(synthesis, task)
        if settings.enabled:
            yield task, settings, synthesis.generators[settings.generator]


class _Generators:
    """Generators by name, each loaded the first time a chunk needs it: a partition with
    nothing to generate (no inputs, or every chunk committed before) loads no model."""

    def __init__(self, synthesis: SynthesisSettings, log: Callable[[str], None]):
        self.settings = synthesis.generators
        self.log = log
        self.open: dict[str, Generator] = {}

    def get(self, name: str) -> Generator:
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


def run_corpus(
    synthesis: SynthesisSettings | None, storage: Storage, asset: str, partition: str, inputs: dict[str, str], log: Callable[[str], None] = print
) -> Manifest:
    """Generate one partition of a corpus asset from its inputs' data URLs; commits and
    returns its manifest. Resumes from the partition's committed chunks, if any, and
    returns the committed manifest as it is when it was made from the same inputs and
    settings (a retried batch does not generate its finished partitions again)."""
    [manifest] = run_corpora(synthesis, storage, asset, {partition: inputs}, log)
    return manifest


def run_corpora(
    synthesis: SynthesisSettings | None, storage: Storage, asset: str, inputs_by_partition: dict[str, dict[str, str]], log: Callable[[str], None] = print
) -> Iterator[Manifest]:
    """``run_corpus`` for several partitions, one after another, with one set of
    generators: a run over many shards loads each model once. Yields each partition's
    committed manifest as it is done."""
    checked = synthesis_settings(synthesis)
    licence_gate(checked, asset)
    generators = _Generators(checked, log)
    try:
        for partition, inputs in inputs_by_partition.items():
            yield _run_partition(checked, storage, asset, partition, inputs, generators, log)
    finally:
        generators.close()


def _run_partition(
    synthesis: SynthesisSettings, storage: Storage, asset: str, partition: str, inputs: dict[str, str], generators: _Generators, log: Callable[[str], None]
) -> Manifest:
    corpus = CORPORA[asset]
    enabled = {
        task.name: TaskPlan(task, settings, settings.generator, generator, partial(generators.get, settings.generator))
        for task, settings, generator in _enabled_tasks(synthesis, asset)
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
    with StageWriter(storage, asset, partition, corpus.schema, VERSION) as out:
        out.source = {**{name: plan.generator_settings.model for name, plan in enabled.items()}, MADE_FROM: key}
        items = corpus.items(storage, inputs, enabled, out)
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
    return manifest if isinstance(manifest, Manifest) and manifest.source.get(MADE_FROM) == key else None
