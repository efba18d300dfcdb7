"""One training stage, top to bottom: set up, resume, loop, checkpoint, export.

Launched by torchrun (one process per GPU, or two on CPU in tests) on
torch.distributed with FSDP2: every decoder and vision layer is its own shard group,
parameters in fp32 with bf16 compute on CUDA. Stage 1 trains the projector, stage 2 the
projector and the LLM; the vision tower is always frozen (Asagi).

The loss is the mean over the answer tokens of the whole global batch, whatever the
micro-batch split or the number of processes: each micro batch's summed loss is divided
by the step's total of trained tokens, counted before the first backward.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import time
from collections.abc import Callable

from pydantic import BaseModel

from asagi_dagster.core import fingerprint
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.progress import progress_line, rate
from asagi_dagster.storage import Manifest, ModelManifest, Storage, StorageSettings
from asagi_dagster.train import data
from asagi_dagster.train.settings import StageSettings, TrainingSettings


class TrainJob(BaseModel):
    """What the orchestrator sends: the profile's storage, training and model settings,
    the stage and where things are."""

    storage: StorageSettings
    training: TrainingSettings
    models: dict[str, ModelRef]  # the vision and LLM roles
    stage: str  # stage1 | stage2
    mixture_url: str
    output_url: str  # the Hugging Face model folder to write
    checkpoint_dir: str  # storage path of this run's checkpoints (keyed by what decides the run)
    start_from: str | None = None  # stage 2: stage 1's model folder


def stage_job(
    training: TrainingSettings, models: dict[str, ModelRef], storage: Storage, stage: str, mixture: Manifest, start_from: ModelManifest | None
) -> TrainJob:
    """The job of one stage on a mixture. Its checkpoints are keyed by what decides the
    run, so a retry resumes and a changed setting, model or mixture starts afresh."""
    roles = {role: models[role] for role in (training.vision_role, training.llm_role)}
    asset = f"vlm_{stage}"
    key = fingerprint(
        {
            "stage": getattr(training, stage).model_dump(),
            "models": {role: model.model_dump() for role, model in roles.items()},
            "seed": training.seed,
            "mixture": storage.identity(mixture.data_url),
            "start_from": start_from.model_dump() if start_from else None,
        }
    )
    return TrainJob(
        storage=storage.settings,
        training=training,
        models=roles,
        stage=stage,
        mixture_url=mixture.data_url,
        output_url=storage.url(storage.path(asset, "all", "model")),
        checkpoint_dir=storage.path("_work", asset, "all", key),
        start_from=start_from.model_url if start_from else None,
    )


def lr_at(step: int, total: int, stage: StageSettings) -> float:
    """Linear warmup over warmup_ratio of the steps, then cosine down to lr x min_lr_ratio."""
    warmup = math.ceil(stage.warmup_ratio * total)
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    low = stage.lr * stage.min_lr_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return low + 0.5 * (stage.lr - low) * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(stage: StageSettings, examples: int) -> int:
    return stage.steps or max(1, math.ceil(stage.epochs * examples / stage.global_batch))


def train(job: TrainJob, report: Callable[[dict], None], log: Callable[[str], None]) -> dict:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from asagi_dagster.train.checkpoint import TrainingCheckpoints, export_model
    from asagi_dagster.train.flops import FlopModel, measured_peak_flops
    from asagi_dagster.train.model import build_stage1_start, image_token_count, load_vlm, model_source, set_trainable

    training = job.training
    stage: StageSettings = getattr(training, job.stage)
    rank, world, device = _init_distributed()
    storage = Storage(job.storage)
    micro_per_step = stage.global_batch // (stage.micro_batch * world)
    if micro_per_step * stage.micro_batch * world != stage.global_batch:
        raise ValueError(f"training.{job.stage}.global_batch {stage.global_batch} is not a multiple of micro_batch {stage.micro_batch} x {world} processes")
    bf16 = training.precision == "bf16" or (training.precision == "auto" and device.type == "cuda")

    # --- the model -------------------------------------------------------------
    torch.manual_seed(training.seed)
    local_start = None  # stage 2: stage 1's model, copied here when the root is remote
    if job.stage == "stage1":
        vision, llm = job.models[training.vision_role], job.models[training.llm_role]
        if rank == 0:  # a builtin tiny model is built once, by one process, before the others load it
            model_source(vision), model_source(llm)
        dist.barrier()
        model, processor = build_stage1_start(vision, llm, training.allow_hub, training.seed)
    else:
        if job.start_from is None:
            raise ValueError("stage 2 needs stage 1's model folder (start_from)")
        local_start = storage.local_folder(job.start_from)
        model, processor = load_vlm(local_start)
    set_trainable(model, job.stage)
    if stage.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    image_tokens = image_token_count(model.config)
    flop_model = FlopModel.of(model, image_tokens, llm_trained=job.stage == "stage2")
    model.to(device)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in [m for m in model.modules() if type(m).__name__ in ("SiglipEncoderLayer", "LlamaDecoderLayer")]:
        if training.compile != "off":  # each layer on its own, as torchtitan does: one graph reused by every layer
            layer.compile(backend=training.compile)
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    trained = [p for p in model.parameters() if p.requires_grad]  # after sharding: FSDP2 swaps in new parameters

    # --- optimizer: decay on matrices only (nanoGPT) -------------------------------
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=device.type == "cuda",
    )

    # --- data and where we are ---------------------------------------------------
    mixture_path = storage.strip_protocol(job.mixture_url)
    reader = data.MixtureReader(storage.fs, mixture_path)
    encoder = data.Encoder(processor, image_tokens, stage.max_text_tokens)
    steps = total_steps(stage, reader.rows)
    checkpoints = TrainingCheckpoints(storage, job.checkpoint_dir, rank, world)
    start = checkpoints.latest()
    if start is not None:
        extra = checkpoints.load(start, model, optimizer)
        _set_rng(extra["rng"])
        position = extra["data_position"]
        log(f"resumed {job.stage} from step {start} of {steps} (example {position})")
    else:
        start, position = 0, 0
    peak = (training.peak_tflops * 1e12) if training.peak_tflops else measured_peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    log(
        f"{job.stage}: {reader.rows} examples, {steps} steps of {stage.global_batch} ({world} processes x "
        f"{micro_per_step} micro batches of {stage.micro_batch}), {'packed' if stage.packing else 'padded'}, "
        f"{'bf16' if bf16 else 'fp32'}, peak {peak / 1e12:.2f} TFLOP/s per device, layers compiled: {training.compile}"
    )

    # --- the loop: nothing is read back from the device except on log steps -------
    history = []
    model.train()
    batches_of_steps = data.StepBatches(
        job.storage,
        mixture_path,
        training.seed,
        encoder,
        processor.tokenizer.pad_token_id,
        stage.packing,
        stage.global_batch,
        stage.micro_batch,
        world,
        rank,
        position,
        steps - start,
    )
    loader = data.step_loader(batches_of_steps, training.data_workers, pin_memory=device.type == "cuda")
    began = time.perf_counter()
    window = _Window(device, began)
    for step, built in zip(range(start, steps), loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, stage)
        batches = [{k: v.to(device, non_blocking=True) for k, v in batch.items()} for batch in built["batches"]]
        lengths = built["lengths"]
        loss_sum, trained_tokens, grad_norm = train_step(model, optimizer, trained, batches, built["trained_tokens"], stage.grad_clip, world)
        position += stage.global_batch
        window.add(loss_sum, trained_tokens, grad_norm, sum(lengths), flop_model.step_flops(lengths, len(lengths)))
        if (step + 1) % stage.log_every == 0 or step + 1 == steps or step == start:  # the same steps on every rank
            metrics = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], **window.read(peak * world)}
            history.append(metrics)
            if rank == 0:
                report(metrics)
                log(progress_line(job.stage, step + 1, steps, "steps", rate(step + 1 - start, time.perf_counter() - began), f"loss {metrics['loss']:.3f}"))
        if (step + 1) % stage.checkpoint_every == 0 or step + 1 == steps:
            checkpoints.save(step + 1, model, optimizer, {"rng": _get_rng(), "data_position": position})

    # --- export ----------------------------------------------------------------------
    export_model(storage, model, processor, storage.strip_protocol(job.output_url), training.export_dtype)
    if local_start and not storage.is_local:
        shutil.rmtree(local_start, ignore_errors=True)
    dist.destroy_process_group()
    return {"steps": steps, "resumed_from": None if start == 0 else start, "examples": reader.rows, "history": history}


def train_step(model, optimizer, trained: list, batches: list[dict], local_tokens: int, grad_clip: float, world: int):
    """One optimizer step over this process's micro batches. Returns device tensors (the
    loss sum, the global count of trained tokens, the gradient norm) and reads none of
    them: the host never waits for the device here.

    The loss is the mean over every trained token of the step, across processes: each
    micro batch's loss sum is divided by the global token count, reduced on the device."""
    import torch
    import torch.distributed as dist

    device = batches[0]["input_ids"].device
    # A fill on the device, no copy; float32 counts exactly up to 2**24 trained tokens a step.
    token_count = torch.full((), local_tokens, dtype=torch.float32, device=device)
    dist.all_reduce(token_count)  # NCCL: queued on the device, no host sync
    # FSDP averages gradients over processes; x world makes it the global token mean.
    scale = world / token_count.clamp(min=1)
    loss_sum = torch.zeros((), device=device)
    for index, batch in enumerate(batches):
        model.set_requires_gradient_sync(index == len(batches) - 1)  # reduce once per step
        micro_loss = data.token_loss_sum(model, batch)
        (micro_loss * scale).backward()
        loss_sum += micro_loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, token_count, grad_norm


class _Window:
    """What the steps since the last log step add up to: device sums kept on the device,
    host counts on the host; ``read`` reduces them across processes in one collective and
    one read back, and times the window between two such reads."""

    def __init__(self, device, began: float):
        import torch

        self.device = device
        self.began = began
        self.device_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, trained tokens
        self.host = [0.0, 0.0, 0]  # tokens, FLOPs, steps
        self.grad_norm = None

    def add(self, loss_sum, trained_tokens, grad_norm, tokens: int, flops: float) -> None:
        import torch

        self.device_sums += torch.stack([loss_sum.double(), trained_tokens.double()])
        self.grad_norm = grad_norm
        self.host = [self.host[0] + tokens, self.host[1] + flops, self.host[2] + 1]

    def read(self, peak_flops: float) -> dict:
        import torch
        import torch.distributed as dist

        assert self.grad_norm is not None  # read after a step was added
        grad_norm = self.grad_norm.full_tensor() if hasattr(self.grad_norm, "full_tensor") else self.grad_norm
        host = torch.tensor(self.host[:2], dtype=torch.float64, device=self.device)
        summed = torch.cat([self.device_sums[:1], host])  # the loss sum, tokens, FLOPs: this process's
        dist.all_reduce(summed)
        # Already global: the trained tokens (reduced each step) and the gradient norm.
        figures = torch.cat([summed, self.device_sums[1:], grad_norm.double().reshape(1)])
        loss_sum, tokens, flops, trained_tokens, norm = figures.tolist()
        now = time.perf_counter()
        seconds, steps = now - self.began, self.host[2]
        self.began, self.host = now, [0.0, 0.0, 0]
        self.device_sums.zero_()
        metrics = {
            "loss": loss_sum / max(1.0, trained_tokens),
            "grad_norm": norm,
            "tokens_per_s": tokens / seconds,
            "trained_tokens": int(trained_tokens),
            "mfu": flops / seconds / peak_flops,
            "step_s": seconds / steps,
        }
        if self.device.type == "cuda":  # the allocator's own counter: no sync
            metrics["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics


def _init_distributed():
    """(rank, world size, device): from torchrun's environment, or a world of one."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:  # started without torchrun: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _global_sum(value, device, kind=int):
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return kind(tensor.item())


def _get_rng() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
