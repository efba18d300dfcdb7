"""The evaluation stage's settings (the profile's ``evaluation``): the benchmarks and
where their data is, the models evaluated, the engine and the judge."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.engines import EndpointSettings, EngineSettings
from asagi_dagster.settings import LocalPath, Strict

TRAINED_MODELS = ("vlm_stage1", "vlm_stage2")  # the training assets evaluation can name


class BenchmarkSource(Strict):
    """Where one benchmark's items come from, and how its questions are put."""

    path: LocalPath | None = Field(
        None, description="A local folder holding the dataset's Parquet files as the hub has them (huggingface-cli download --repo-type dataset)."
    )
    hub_id: str | None = Field(None, description="Default: the dataset eval-mm uses. Read only when path is not set and evaluation.allow_hub is true.")
    revision: str | None = Field(None, description="Pinned dataset commit (required for the hub).")
    instruction: str | None = Field(None, description="Put after each question, e.g. asking for a short answer (VG-VQA's references are a few words).")
    limit: int | None = Field(None, ge=1, description="Only the first N items (smoke runs); scores over a subset are not comparable.")


class JudgeSettings(Strict):
    """An OpenAI-compatible endpoint that judges answers (a vLLM judge model in the cluster, or an
    external API with its key from the environment). Its model id is recorded with every score."""

    model: str = Field(description="The model id as the endpoint serves it.")
    revision: str | None = Field(
        None, description="The model's commit on the hub: the judge server loads it (asagi judge-manifest) and every score records it."
    )
    endpoint: EndpointSettings
    repeats: int = Field(1, ge=1, description="Each item is judged this many times (seeds seed, seed+1, ...) and the scores averaged.")
    seed: int = 0
    max_tokens: int = Field(1024, ge=16)


class EvaluationSettings(Strict):
    """Benchmark scores with llm-jp-eval-mm 0.4.1's semantics."""

    benchmarks: dict[str, BenchmarkSource] = Field(description="By name, each a key of asagi_dagster.benchmarks.BENCHMARKS.")
    models: list[str] = Field(
        ["vlm_stage2"],
        min_length=1,
        description="What is evaluated: vlm_stage1 / vlm_stage2 (this project's training), or a key of the profile's models (a hub id or folder).",
    )
    engine: EngineSettings = Field(EngineSettings(), description="How predictions are generated: transformers locally, vllm in GPU pods.")
    max_new_tokens: int = Field(256, ge=1)
    judge: JudgeSettings | None = Field(None, description="None: judge scores are recorded as not computed.")
    allow_hub: bool = Field(False, description="May read benchmark datasets from the Hugging Face hub (cluster).")

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, benchmarks: dict[str, BenchmarkSource]) -> dict[str, BenchmarkSource]:
        unknown = sorted(set(benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a benchmark (known: {', '.join(BENCHMARKS)})")
        return benchmarks

    @model_validator(mode="after")
    def _sources_reachable(self) -> EvaluationSettings:
        for name, source in self.benchmarks.items():
            if source.path is None and not (self.allow_hub and source.revision):
                raise ValueError(f"benchmarks.{name}: set path, or allow_hub with a pinned revision")
        if len(set(self.models)) != len(self.models):
            raise ValueError("models: each model once")
        return self
