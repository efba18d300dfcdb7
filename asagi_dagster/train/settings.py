"""The training stage's settings (the profile's ``training``): the two stages' mixtures
and optimisation, precision, export and checkpointing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from asagi_dagster.settings import Strict


class StageSettings(Strict):
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


class TrainingSettings(Strict):
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
