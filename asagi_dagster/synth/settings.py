"""The synthesis stage's settings (the profile's ``synthesis``): generators by name, with
their licence facts, and the tasks' settings laid over each task's defaults."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator

from asagi_dagster.engines import GenerationSettings, SamplingSettings
from asagi_dagster.settings import Strict


class GeneratorSettings(GenerationSettings):
    """A model that writes training text, with the licence facts the gate checks."""

    licence: str
    outputs_trainable: bool = Field(description="Does the licence let its outputs train other models? false: synthesis refuses it.")


class TaskSettings(Strict):
    """One synthesis task: who writes, how it samples, what a valid answer looks like."""

    enabled: bool = True
    generator: str = Field(description="A name under synthesis.generators.")
    sampling: SamplingSettings = SamplingSettings()
    max_attempts: int = Field(3, ge=1, description="Tries per item, each with another seed, before it is rejected.")
    min_chars: int = Field(10, ge=0)
    max_chars: int = Field(1000, ge=1)
    min_language_ratio: float = Field(0.5, ge=0, le=1, description="Share of the letters in the task's language: kana/kanji for Japanese, Latin for English.")
    few_shot: list[dict[str, str]] = Field([], description="Worked examples in the prompt: the task's input fields plus 'output'.")
    source_length_ratio: tuple[float, float] = Field(
        (0.15, 1.5),
        description="Translation only: output characters / source characters must fall in this range (Japanese runs about 0.3-0.7 per English character).",
    )


class SynthesisSettings(Strict):
    """Synthesized corpora (the Asagi method): generators by name and the tasks that use them."""

    generators: dict[str, GeneratorSettings] = {}
    tasks: dict[str, dict[str, Any]] = Field(
        {},
        description=(
            "By task name (the tasks of asagi_dagster/synth/corpora/): TaskSettings fields laid over the task's own defaults, "
            "so an entry names only what it changes. Names and generators are checked against the registry (synth.generate.check_tasks)."
        ),
    )
    chunk_rows: int = Field(64, ge=1, description="Items per checkpoint: a killed run redoes at most one chunk.")
    seed: int = 0
    translate_datasets: list[str] = Field([], description="English datasets (sources.datasets) to translate into Japanese.")

    @field_validator("tasks")
    @classmethod
    def _task_fields(cls, tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, entry in tasks.items():  # the fields and their types now; the defaults join them where the task is known
            try:
                TaskSettings.model_validate({"generator": "", **entry})
            except ValidationError as error:
                raise ValueError(f"tasks.{name}: {error}") from None
        return tasks
