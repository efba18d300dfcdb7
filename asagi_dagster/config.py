"""Settings for every stage, loaded from one YAML profile.

The profile is chosen by ``ASAGI_CONFIG`` (default: ``configs/local.yaml``, the
embedded default). Unknown keys are errors, and a bad file fails at load with the
file, the key and what was expected. Secrets never live here: they come from the
environment (see ``StorageSettings.s3``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.pair_rules import RuleSettings, rule_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = PROJECT_DIR / "configs" / "local.yaml"
CONFIG_ENV = "ASAGI_CONFIG"


class ConfigError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Strict):
    """Where s3:// roots live. Credentials come from AWS_* environment variables."""

    endpoint_url: str | None = None
    region: str | None = None


class StorageSettings(_Strict):
    root: str = Field(description="fsspec URL (file:// or s3://) or a local path.")
    s3: S3Settings = S3Settings()
    duckdb_path: str | None = Field(
        default=None,
        description="Database file for stats and reports; None means in-memory.",
    )


class DownloaderSettings(_Strict):
    user_agent: str = "asagi-dagster/0.1 (+https://github.com/asagi-dagster)"
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(15.0, gt=0, description="Longest wait for the next bytes.")
    total_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Longest one image fetch may take, all of it: name lookup, connecting, TLS, "
            "headers, body, robots.txt, redirects, retries and waiting for the host's turn."
        ),
    )
    max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_redirects: int = Field(5, ge=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    per_host_interval_s: float = Field(1.0, ge=0, description="Minimum gap between two requests to one host, for all downloaders together (see downloaders).")
    per_host_connections: int = Field(4, ge=1, description="Most requests in flight to one host at once, for all downloaders together.")
    downloaders: int = Field(
        1,
        ge=1,
        description="How many pair_images steps may download at once in the deployment: the limit of the Dagster pool the pair_images asset runs in. "
        "The per-host budgets above are shared out among them: each waits per_host_interval_s x downloaders between requests to a host and keeps "
        "per_host_connections // downloaders in flight, so the host sees the budget whatever machines or pods the steps run on.",
    )
    workers: int = Field(4, ge=1)
    allowed_content_types: list[str] = ["image/"]
    respect_robots_txt: bool = True
    # Private, loopback and link-local addresses are refused unless listed here
    # (tests and the embedded sample's image server on 127.0.0.1).
    allow_networks: list[str] = []

    @field_validator("allow_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for index, net in enumerate(value):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"entry {index} is not an IP network such as 10.0.0.0/8 or 127.0.0.1") from None  # not echoed: see _describe
        return value

    @model_validator(mode="after")
    def _connections_cover_downloaders(self) -> DownloaderSettings:
        if self.per_host_connections < self.downloaders:
            raise ValueError(
                f"per_host_connections ({self.per_host_connections}) is below downloaders ({self.downloaders}): every downloader needs "
                "one connection per host of its own; raise per_host_connections or lower the pool limit and downloaders"
            )
        return self


class HtmlSettings(_Strict):
    max_images_per_page: int = Field(500, ge=1)
    max_alt_chars: int = Field(10_000, ge=1)
    max_context_chars: int = Field(1_000, ge=1, description="Cap on nearest text before/after an image.")


class WebSourceSettings(_Strict):
    inbox: str = Field(description="Folder or s3:// prefix that receives .warc/.warc.gz shards.")
    resync_cron: str = "0 * * * *"
    sensor_interval_s: int = Field(60, ge=5)
    shards_per_run: int = Field(
        8,
        ge=1,
        description=(
            "Shards one backfill run takes, one after another, through each per-shard step (ingest, screening, "
            "filtering, reference texts, synthesis): each run has a fixed cost (process start, code load, queue; a GPU "
            "program's model load), paid once per batch."
        ),
    )
    max_html_bytes: int = Field(5 * 1024 * 1024, gt=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    html: HtmlSettings = HtmlSettings()
    downloader: DownloaderSettings = DownloaderSettings()


class DatasetSource(_Strict):
    """One open image-text dataset, mapped onto the common pair schema.

    Local data: ``path`` to a Parquet file (or folder of them), a JSONL file whose rows
    name image files under ``image_dir``, or an imagefolder (images plus
    metadata.jsonl with file_name). ``hub_id``: a Hugging Face dataset's Parquet files,
    only where the hub is reachable (never in tests or the embedded default).
    """

    format: Literal["parquet", "jsonl", "imagefolder"]
    path: str | None = None
    hub_id: str | None = None
    hub_revision: str | None = None
    image_dir: str | None = Field(None, description="Where image file names are resolved (jsonl; parquet with path-only images).")
    image_column: str = "image"  # bytes, a {bytes, path} struct, or a file name
    text_column: str | None = None  # a caption
    question_column: str | None = None  # or a question and its answer (VQA)
    answer_column: str | None = None
    id_column: str | None = Field(None, description="The record's own id; default: its row number.")
    image_id_column: str | None = Field(None, description="Rows sharing an image id share one origin (e.g. five captions of one photo).")
    vg_image_id_column: str | None = Field(None, description="Visual Genome image id, for decontamination against JA-VG-VQA-500.")
    language: Literal["ja", "en"] = "ja"
    licence: str
    rules: dict[str, dict] = Field({}, description="Overrides of filters.rules for this dataset, e.g. {ascii_only: {enabled: false}} for English.")

    @model_validator(mode="after")
    def _complete(self) -> DatasetSource:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("set exactly one of path (local data) and hub_id (Hugging Face)")
        if not self.text_column and not (self.question_column and self.answer_column):
            raise ValueError("set text_column, or question_column and answer_column")
        return self


class SourcesSettings(_Strict):
    web: WebSourceSettings
    datasets: dict[str, DatasetSource] = {}


class ImageSafetySettings(_Strict):
    """Limits that keep untrusted image bytes from hurting the process; not optional."""

    max_pixels: int = Field(50_000_000, gt=0, description="Width x height from the header above this: a decompression bomb.")
    formats: list[str] = Field(["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"], description="Pillow format names accepted.")
    # 128 keeps the perceptual hash stable (it reads 32x32) and lets JPEG decode at 1/8 scale.
    thumbnail_side: int = Field(128, ge=32, description="Images are decoded at about this size for the pixel rules and hashes.")


class DedupSettings(_Strict):
    max_hamming: int = Field(4, ge=0, le=16, description="Perceptual hashes this close (in bits of 64) are near duplicates.")


class BenchmarkImages(_Strict):
    """Where one evaluation benchmark's images are (until its evaluation asset provides them)."""

    images: str | None = Field(None, description="A folder of image files, or a Parquet file with an image column.")
    vg_image_ids: str | None = Field(None, description="A text file of Visual Genome image ids, one per line.")


class DecontaminationSettings(_Strict):
    max_hamming: int = Field(8, ge=0, le=24, description="Training images this close to a benchmark image are removed.")
    benchmarks: dict[str, BenchmarkImages] = {}


class DocumentFilterSettings(_Strict):
    """Drop images too similar to document images (infographics, charts, diagrams)."""

    enabled: bool = True
    encoder_role: str = Field("document_encoder", description="The models entry that embeds images (CLIP/SigLIP id, or builtin:pixel-stats).")
    reference_images: str | None = Field(None, description="A folder of document images (the papers used InfographicVQA, DVQA, AI2D).")
    method: Literal["centroid", "knn"] = "knn"
    k: int = Field(3, ge=1, description="knn: similarity is the mean over the k most similar references.")
    # Calibrated for builtin:pixel-stats on scikit-image's documents and photos; a real
    # encoder needs its own (see docs/decisions.md).
    threshold: float = Field(0.85, ge=-1, le=1, description="Cosine similarity at or above this drops the image.")
    batch_size: int = Field(32, ge=1)
    allow_hub: bool = Field(False, description="Let the encoder download from the Hugging Face hub (cluster only).")


class FilterSettings(_Strict):
    caption_fields: list[Literal["alt", "figcaption", "title"]] = Field(
        ["alt", "figcaption", "title"], min_length=1, description="A web pair's text: the first of these it has."
    )
    image_safety: ImageSafetySettings = ImageSafetySettings()
    rules: dict[str, SerializeAsAny[RuleSettings]] = Field(
        default_factory=lambda: rule_settings({}),
        description="By rule name (asagi_dagster/pair_rules/): the rule's settings laid over its defaults. Each rule's name is its rejection reason.",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _registered_rules(cls, raw: object) -> object:
        return rule_settings(raw) if isinstance(raw, dict) else raw

    def with_rule_overrides(self, overrides: dict[str, dict]) -> FilterSettings:
        """These settings with one source's rule overrides merged in, validated."""
        unknown = sorted(set(overrides) - set(self.rules))
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (rules: {', '.join(self.rules)})")
        merged = {name: {**settings.model_dump(), **overrides.get(name, {})} for name, settings in self.rules.items()}
        return self.model_copy(update={"rules": rule_settings(merged)})

    dedup: DedupSettings = DedupSettings()
    decontamination: DecontaminationSettings = DecontaminationSettings()
    document_filter: DocumentFilterSettings = DocumentFilterSettings()


class ReferenceTextSettings(_Strict):
    """How a page's main text becomes candidate sentences for its images."""

    min_extracted_chars: int = Field(20, ge=1, description="trafilatura's MIN_EXTRACTED_SIZE: below it, it flattens the whole page.")
    min_sentence_chars: int = Field(5, ge=1)
    max_sentence_chars: int = Field(300, ge=1)
    scorer_role: str = Field("reference_scorer", description="The models entry that scores sentences against images (a Japanese CLIP).")
    allow_hub: bool = Field(False, description="Let the scorer download from the Hugging Face hub (cluster only).")
    trust_remote_code: bool = Field(False, description="Needed by models with their own code, e.g. line-corporation/clip-japanese-base.")
    runner_ups: int = Field(3, ge=0, description="How many next-best scores to keep beside the best.")


class EndpointSettings(_Strict):
    """An OpenAI-compatible server (``vllm serve`` or a provider). The key, if any, is
    read from the environment variable named here, never from the profile."""

    base_url: str = Field(description="Up to and including /v1, e.g. http://vllm-caption:8000/v1.")
    served_model: str | None = Field(None, description="The model name the server knows; default: the generator's model.")
    api_key_env: str | None = None
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(3, ge=0, description="Retries of a failed request (connection errors, 429 and 5xx).")
    backoff_s: float = Field(1.0, ge=0)


class EngineSettings(_Strict):
    """How a model is run for generation: the backend and its knobs (synthesis and evaluation)."""

    backend: Literal["transformers", "vllm", "openai", "scripted"] = Field(
        "transformers", description="scripted: answers from a JSON script (model: its path), for dry runs and tests of what follows generation."
    )
    endpoint: EndpointSettings | None = None
    image_placeholder: str | None = Field(
        None, description="For chat templates that take plain-string content (Phi-3.5-vision: '<|image_1|>'); default: an image content part."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, ge=64)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = Field(False, description="vLLM: no CUDA graph capture (faster start; CPU runs need it).")
    enable_chunked_prefill: bool | None = Field(
        None,
        description=(
            "vLLM: None keeps vLLM's default. False on CPU: there a seeded request whose "
            "prompt is split across steps fails ('CPU Generator does not use offset')."
        ),
    )
    trust_remote_code: bool = False
    allow_hub: bool = Field(False, description="Let the model download from the Hugging Face hub (cluster only).")
    batch_size: int = Field(16, ge=1, description="transformers: requests generated together, left-padded (vLLM and servers batch on their own).")

    @property
    def prompt_image_placeholder(self) -> str | None:
        """The placeholder to write into prompts: none over HTTP, where the server's template places the image."""
        return self.image_placeholder if self.backend != "openai" else None


class GenerationSettings(EngineSettings):
    """A model and how an engine runs it (asagi_dagster/engines.py): what synthesis,
    predictions and the judge each generate with."""

    model: str = Field(description="Hub id, local directory, or builtin:tiny-llama-ja / builtin:tiny-llava-ja.")
    revision: str | None = Field(None, description="Pinned commit for hub models (required for them).")
    modality: Literal["text", "image"] = Field("text", description="image: a VLM that reads one image with the prompt.")

    @property
    def builtin(self) -> bool:
        return self.model.startswith("builtin:")

    @model_validator(mode="after")
    def _backend_needs(self) -> GenerationSettings:
        if self.backend == "openai" and self.endpoint is None:
            raise ValueError("backend openai needs an endpoint")
        if self.allow_hub and not self.revision:
            raise ValueError(f"{self.model}: a hub model needs a pinned revision")
        return self


class GeneratorSettings(GenerationSettings):
    """A model that writes training text, with the licence facts the gate checks."""

    licence: str
    outputs_trainable: bool = Field(description="Does the licence let its outputs train other models? false: synthesis refuses it.")


class SamplingSettings(_Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    repetition_penalty: float = Field(1.05, gt=0)


class TaskSettings(_Strict):
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


class SynthesisSettings(_Strict):
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


class PodSettings(_Strict):
    """A Kubernetes pod for one kind of GPU work (cluster profile)."""

    image: str
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu")
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, str]] = []
    secret_env: dict[str, str] = Field({}, description="Environment variable -> 'secret-name/key' of a Kubernetes Secret.")
    env: dict[str, str] = Field({}, description="Plain environment variables (not secrets), e.g. HF_HUB_OFFLINE: '1' with a filled model cache.")
    image_pull_secrets: list[str] = Field([], description="Secrets of type kubernetes.io/dockerconfigjson for a private registry.")
    active_deadline_s: int = Field(24 * 3600, ge=60)
    pod_wait_timeout_s: int = Field(24 * 3600, ge=60, description="How long Dagster waits for the pod, scheduling included.")
    service_account: str | None = None
    model_cache_claim: str | None = Field(
        None, description="A PersistentVolumeClaim mounted at /models as HF_HOME's parent (k8s/cluster/model-cache-pvc.yaml)."
    )

    @field_validator("secret_env")
    @classmethod
    def _secret_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+", ref):
                # The value is not repeated: it may be the secret itself.
                raise ValueError(f"{name}: not a 'secret-name/key' reference (secret values never go in a profile)")
        return value

    @model_validator(mode="after")
    def _env_once(self) -> PodSettings:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"{', '.join(both)}: in both env and secret_env")
        return self


class GpuJobSettings(_Strict):
    """Where GPU work runs: a local subprocess (embedded default) or a pod per run."""

    runner: Literal["subprocess", "k8s"] = "subprocess"
    python: str | None = Field(
        None,
        description=(
            "Interpreter for the subprocess runner, e.g. ../.venv-vllm/bin/python (built by "
            "scripts/vllm_cpu_env.sh) for vLLM on CPU; default: the one running Dagster."
        ),
    )
    namespace: str = "dagster"
    poll_interval_s: float = Field(10.0, gt=0, description="How often Dagster polls the Kubernetes API for a pod's state.")
    pods: dict[Literal["synthesis", "training", "evaluation", "judge"], PodSettings] = {}

    @model_validator(mode="after")
    def _pods_for_k8s(self) -> GpuJobSettings:
        if self.runner == "k8s" and "synthesis" not in self.pods:
            raise ValueError("runner k8s needs pods.synthesis (image, GPUs, ...)")
        return self


class StageSettings(_Strict):
    """One training stage: its data mixture and its optimisation (Asagi's table by default)."""

    mixture: dict[str, float] = Field(
        description=("Source -> weight (the sources of asagi_dagster/train/sources.py). An image with several texts keeps one, drawn with these weights.")
    )
    global_batch: int = Field(ge=1, description="Examples per optimizer step, over all processes.")
    micro_batch: int = Field(1, ge=1, description="Examples per process per forward pass; accumulation fills the rest.")
    lr: float = Field(gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine schedule ends at lr x this.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the mixture (used when steps is not set).")
    steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    max_text_tokens: int = Field(1024, ge=16, description="Text tokens per example (image tokens come on top); longer answers are cut.")
    packing: bool = Field(True, description="Padding-free packing: a micro batch is one row, position ids reset per example.")
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(500, ge=1, description="Optimizer steps between resumable checkpoints.")
    log_every: int = Field(10, ge=1)

    @field_validator("mixture")
    @classmethod
    def _positive_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():  # the names are checked against the registry by the training stage (check_mixture)
            if weight <= 0:
                raise ValueError(f"{name}: weight must be > 0 (leave a source out instead), got {weight}")
        if not value:
            raise ValueError("a stage needs at least one source")
        return value


class TrainingSettings(_Strict):
    """Two-stage LLaVA training (Asagi): stage 1 trains the projector, stage 2 the projector and LLM."""

    vision_role: str = Field("vision_encoder", description="The models entry of the vision tower (SigLIP).")
    llm_role: str = Field("llm", description="The models entry of the LLM (Llama architecture, e.g. llm-jp-3).")
    seed: int = 0
    processes_per_node: int = Field(1, ge=1, description="torchrun processes for the subprocess runner (the pod runs one per GPU).")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    export_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    peak_tflops: float | None = Field(None, gt=0, description="Per-device peak for MFU; default: measured at start (a matmul benchmark).")
    allow_hub: bool = Field(False, description="May load the vision tower and LLM from the Hugging Face hub (cluster).")
    compile: Literal["off", "inductor", "aot_eager"] = Field(
        "off",
        description=(
            "torch.compile each vision and decoder layer before sharding (regional compilation): inductor on GPUs; aot_eager traces without generating code."
        ),
    )
    data_workers: int = Field(
        2, ge=0, description="DataLoader worker processes per training process that build the next steps' batches beside the step (0: in the training process)."
    )
    stage1: StageSettings = StageSettings(mixture={"ja_captions": 1.0, "translated_pairs": 1.0, "dataset_pairs": 1.0}, global_batch=2048, lr=1e-4)
    stage2: StageSettings = StageSettings(
        mixture={"ja_captions": 1.0, "synthetic_vqa": 1.0, "synthetic_mcvqa": 1.0, "translated_pairs": 1.0, "dataset_pairs": 1.0},
        global_batch=144,
        lr=2e-5,
    )


TRAINED_MODELS = ("vlm_stage1", "vlm_stage2")  # the training assets evaluation can name


class BenchmarkSource(_Strict):
    """Where one benchmark's items come from, and how its questions are put."""

    path: str | None = Field(
        None, description="A local folder holding the dataset's Parquet files as the hub has them (huggingface-cli download --repo-type dataset)."
    )
    hub_id: str | None = Field(None, description="Default: the dataset eval-mm uses. Read only when path is not set and evaluation.allow_hub is true.")
    revision: str | None = Field(None, description="Pinned dataset commit (required for the hub).")
    instruction: str | None = Field(None, description="Put after each question, e.g. asking for a short answer (VG-VQA's references are a few words).")
    limit: int | None = Field(None, ge=1, description="Only the first N items (smoke runs); scores over a subset are not comparable.")


class JudgeSettings(_Strict):
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


class EvaluationSettings(_Strict):
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


class SampleSettings(_Strict):
    """The embedded default's bundled sample site (generated at first run)."""

    image_server_host: str = "127.0.0.1"
    image_server_port: Annotated[int, Field(ge=1, le=65535)] = 8765


class ModelRef(_Strict):
    """A model the pipeline may load: a hub id (cluster) or a local directory."""

    id: str
    revision: str | None = None


class DagsterSettings(_Strict):
    home: str = Field(description="DAGSTER_HOME used when the environment sets none.")


class AsagiConfig(_Strict):
    profile: str
    storage: StorageSettings
    sources: SourcesSettings
    filters: FilterSettings = FilterSettings()
    reference_texts: ReferenceTextSettings = ReferenceTextSettings()
    dagster: DagsterSettings
    sample: SampleSettings | None = None
    models: dict[str, ModelRef] = {}
    synthesis: SynthesisSettings | None = Field(None, description="None: the synthesis assets refuse to run, saying so.")
    gpu_jobs: GpuJobSettings = GpuJobSettings()
    training: TrainingSettings | None = Field(None, description="None: the training assets refuse to run, saying so.")
    evaluation: EvaluationSettings | None = Field(None, description="None: no evaluation assets.")

    @model_validator(mode="after")
    def _dataset_rules_valid(self) -> AsagiConfig:
        for name, dataset in self.sources.datasets.items():
            try:
                self.filters.with_rule_overrides(dataset.rules)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"sources.datasets.{name}.rules: {exc}") from None
        return self

    @model_validator(mode="after")
    def _translations_name_english_datasets(self) -> AsagiConfig:
        for name in self.synthesis.translate_datasets if self.synthesis else []:
            dataset = self.sources.datasets.get(name)
            if dataset is None:
                raise ValueError(f"synthesis.translate_datasets: {name!r} is not in sources.datasets")
            if dataset.language != "en":
                raise ValueError(f"synthesis.translate_datasets: {name!r} is language {dataset.language!r}; only English datasets are translated")
        return self

    @model_validator(mode="after")
    def _training_models_exist(self) -> AsagiConfig:
        if self.training:
            for role in (self.training.vision_role, self.training.llm_role):
                if role not in self.models:
                    raise ValueError(f"training: models.{role} is not set (the stage 1 model is built from it)")
        return self

    @model_validator(mode="after")
    def _evaluated_models_exist(self) -> AsagiConfig:
        for name in self.evaluation.models if self.evaluation else []:
            if name in TRAINED_MODELS:
                if self.training is None:
                    raise ValueError(f"evaluation.models: {name} needs the training section")
            elif name not in self.models:
                raise ValueError(f"evaluation.models: {name!r} is neither {' nor '.join(TRAINED_MODELS)} nor a key of models")
        return self


def _resolve_local(path: str, base: Path) -> str:
    """Relative local paths are relative to the profile file, URLs stay as they are."""
    if "://" in path:
        return path
    return str((base / path).resolve())


def _absolutize(raw: dict, base: Path) -> dict:
    storage = raw.get("storage")
    if isinstance(storage, dict):
        for key in ("root", "duckdb_path"):
            if isinstance(storage.get(key), str):
                storage[key] = _resolve_local(storage[key], base)
    web = raw.get("sources", {}).get("web") if isinstance(raw.get("sources"), dict) else None
    if isinstance(web, dict) and isinstance(web.get("inbox"), str):
        web["inbox"] = _resolve_local(web["inbox"], base)
    datasets = raw.get("sources", {}).get("datasets") if isinstance(raw.get("sources"), dict) else None
    for dataset in datasets.values() if isinstance(datasets, dict) else ():
        for key in ("path", "image_dir"):
            if isinstance(dataset, dict) and isinstance(dataset.get(key), str):
                dataset[key] = _resolve_local(dataset[key], base)
    filters = raw.get("filters")
    decontamination = filters.get("decontamination") if isinstance(filters, dict) else None
    benchmarks = decontamination.get("benchmarks") if isinstance(decontamination, dict) else None
    for paths in benchmarks.values() if isinstance(benchmarks, dict) else ():
        for key in ("images", "vg_image_ids"):
            if isinstance(paths, dict) and isinstance(paths.get(key), str):
                paths[key] = _resolve_local(paths[key], base)
    documents = filters.get("document_filter") if isinstance(filters, dict) else None
    if isinstance(documents, dict) and isinstance(documents.get("reference_images"), str):
        documents["reference_images"] = _resolve_local(documents["reference_images"], base)
    evaluation = raw.get("evaluation")
    sources = evaluation.get("benchmarks") if isinstance(evaluation, dict) else None
    for source in sources.values() if isinstance(sources, dict) else ():
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _resolve_local(source["path"], base)
    dagster = raw.get("dagster")
    if isinstance(dagster, dict) and isinstance(dagster.get("home"), str):
        dagster["home"] = _resolve_local(dagster["home"], base)
    gpu_jobs = raw.get("gpu_jobs")
    python = gpu_jobs.get("python") if isinstance(gpu_jobs, dict) else None
    if isinstance(gpu_jobs, dict) and isinstance(python, str) and "/" in python:  # a bare name is looked up on PATH
        # Absolute but not resolved: a venv's python is a symlink, and following it leaves the venv.
        gpu_jobs["python"] = os.path.normpath(base / python)
    return raw


# Error messages name the file, the key and what was expected, never the value given:
# any key can receive a secret pasted in the wrong place, and a value built by YAML
# aliases can be millions of items long. (The profile's own validators may quote a name
# that refers to another key, such as a dataset or a generator, to say which one is
# missing.) Messages are also bounded in count and size.
_MAX_ERRORS = 20
_MAX_KEY_CHARS = 80
_MAX_MESSAGE_CHARS = 200
# Values in a profile once its aliases are expanded; the shipped ones have under 500.
MAX_PROFILE_NODES = 10_000
_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"), (dict, "a mapping"))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"invalid profile {path}:"]
    items = error.errors()
    for item in items[:_MAX_ERRORS]:
        key = ".".join(_clip(str(p), _MAX_KEY_CHARS) for p in item["loc"]) or "<top level>"
        message = _clip(item["msg"], _MAX_MESSAGE_CHARS)
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif item["type"] in ("missing", "value_error", "assertion_error"):  # the message is the whole story
            lines.append(f"  {key}: {message}")
        else:
            lines.append(f"  {key}: {message} (got {_kind(item.get('input'))})")
    if len(items) > _MAX_ERRORS:
        lines.append(f"  ... and {len(items) - _MAX_ERRORS} more")
    return "\n".join(lines)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, line_start = raw.count(b"\n", 0, exc.start) + 1, raw.rfind(b"\n", 0, exc.start) + 1
        where = f"line {line}, column {exc.start - line_start + 1}"
        raise ConfigError(f"profile {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at {where}); save it as UTF-8") from None


def _parse_yaml(text: str, path: Path):
    """yaml.safe_load, refusing documents whose aliases expand past MAX_PROFILE_NODES
    (checked on the node graph, before anything is built from it)."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, path)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_PROFILE_NODES) > MAX_PROFILE_NODES:
            raise ConfigError(f"invalid profile {path}: its aliases expand it past {MAX_PROFILE_NODES} values (a profile has a few hundred)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, path)) from None
    except RecursionError:
        raise ConfigError(f"invalid YAML in profile {path}: nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes the document has with every alias expanded, counting stops past
    ``limit`` (a recursive alias never ends, so it always goes past)."""
    count, stack = 0, [root]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += (key, value)
    return count


def _yaml_problem(exc: yaml.YAMLError, path: Path) -> str:
    """One line: where and what, without PyYAML's quoted snippet of the line (a value)."""
    mark, position = getattr(exc, "problem_mark", None), getattr(exc, "position", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else f", character {position + 1}" if position is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return _clip(f"invalid YAML in profile {path}{where}: {context + ': ' if context else ''}{problem}", 400)


def profile_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_PROFILE).resolve()


def load_config(path: str | Path | None = None) -> AsagiConfig:
    """Load and validate a profile; raises ConfigError naming file, key and expectation."""
    path = Path(path).resolve() if path else profile_path()
    raw = _parse_yaml(_read_text(path), path)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid profile {path}: expected a mapping at the top level")
    try:
        return AsagiConfig.model_validate(_absolutize(raw, path.parent))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
