"""Stage 2 training throughput and MFU at the Asagi-2B shape, through the real trainer.

Builds random-initialised towers of the Asagi-2B shape here (SigLIP-so400m-patch14-384:
729 image tokens; a Llama of llm-jp-3-1.8b's shape: hidden 2048, 24 layers, vocab 99584)
with the project's tokenizer, assembles them into a stage 1 model, writes a synthetic
mixture whose every example is 729 image + ``--text-tokens`` text tokens, and runs
``python -m asagi_dagster.train`` under torchrun (one worker per GPU) as stage 2: FSDP2,
bf16 compute, packing. It prints the trainer's own tokens/s and MFU (model FLOPs on real
tokens against the matmul peak the trainer measures at start), median over the steps
after the warm-up.

    python -m benchmarks.bench_train_shape                       # on a GPU machine
    python -m benchmarks.bench_train_shape --scale tiny --steps 4  # the same path on CPU, in seconds

Target at the Asagi-2B shape on GPUs: MFU >= 40%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TARGET_MFU = 0.40
SHAPES = {
    # SigLIP-so400m-patch14-384 and llm-jp-3-1.8b (field notes).
    "asagi-2b": {
        "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
        "llm": {
            "hidden_size": 2048,
            "intermediate_size": 7168,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "vocab_size": 99584,
        },
    },
    "tiny": {
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        "llm": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 3000},
    },
}


def build_towers(folder: Path, shape: dict) -> tuple[Path, Path]:
    """Random SigLIP and Llama folders of ``shape``, with the project's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from asagi_dagster.models.corpus import tokenizer_corpus
    from asagi_dagster.models.tiny import chat_tokenizer

    torch.manual_seed(0)
    vision_dir, llm_dir = folder / "vision", folder / "llm"
    SiglipVisionModel(SiglipVisionConfig(**shape["vision"])).save_pretrained(vision_dir)
    side = shape["vision"]["image_size"]
    SiglipImageProcessor(size={"height": side, "width": side}).save_pretrained(vision_dir)
    tokenizer = chat_tokenizer(tokenizer_corpus())
    config = LlamaConfig(
        **shape["llm"],
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return vision_dir, llm_dir


def write_stage1_model(folder: Path, vision_dir: Path, llm_dir: Path) -> Path:
    from asagi_dagster.models.settings import ModelRef
    from asagi_dagster.train.checkpoint import vllm_vision_names
    from asagi_dagster.train.model import build_stage1_start

    model, processor = build_stage1_start(ModelRef(id=str(vision_dir)), ModelRef(id=str(llm_dir)), allow_hub=False, seed=0)
    out = folder / "stage1"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    vllm_vision_names(out)
    return out


def write_mixture(storage, examples: int, text_tokens: int) -> str:
    import io

    import numpy as np
    from PIL import Image

    from asagi_dagster.storage import StageWriter
    from asagi_dagster.train.mixture import MIXTURE, VERSION

    answer = "窓辺で外を眺める茶トラの猫が写っている。" * (text_tokens // 4)  # longer than text_tokens: cut to it
    with StageWriter(storage, "stage2_mixture", None, MIXTURE, VERSION) as out:
        for i in range(examples):
            buffer = io.BytesIO()
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (384, 384, 3), dtype=np.uint8)).save(buffer, "JPEG")
            out.count_in()
            out.write(
                {
                    "example_id": f"x{i}",
                    "source": "ja_captions",
                    "pair_id": f"p{i}",
                    "image_sha256": str(i),
                    "image_phash": i,
                    "vg_image_id": None,
                    "instruction": "この画像を説明してください。",
                    "response": answer,
                    "candidates": 1,
                    "bytes": buffer.getvalue(),
                }
            )
    storage.write_manifest(out.manifest)
    return out.manifest.data_url


def run_shape(
    scale: str,
    gpus: int | None = None,
    micro_batch: int = 4,
    accumulation: int = 2,
    steps: int = 12,
    warmup_steps: int = 2,
    text_tokens: int = 1024,
    checkpointing: bool = False,
    packing: bool = True,
    log=print,
) -> dict:
    """One stage 2 run of the trainer at ``scale``; the median figures after the warm-up."""
    import torch

    from asagi_dagster.config import AsagiConfig
    from asagi_dagster.storage import ModelManifest, Storage
    from asagi_dagster.train.trainer import stage_job

    workers = gpus or max(1, torch.cuda.device_count())
    work = Path(tempfile.mkdtemp(prefix="asagi-bench-train-"))
    vision_dir, llm_dir = build_towers(work, SHAPES[scale])
    start = write_stage1_model(work, vision_dir, llm_dir)
    global_batch = micro_batch * workers * accumulation
    stage = {
        "mixture": {"ja_captions": 1.0},
        "global_batch": global_batch,
        "micro_batch": micro_batch,
        "lr": 2e-5,
        "steps": steps,
        "checkpoint_every": steps,
        "log_every": 1,
        "max_text_tokens": text_tokens,
        "packing": packing,
        "gradient_checkpointing": checkpointing,
    }
    config = AsagiConfig.model_validate(
        {
            "profile": "bench",
            "storage": {"root": str(work / "data")},
            "sources": {"web": {"inbox": str(work / "inbox")}},
            "dagster": {"home": str(work / "dagster")},
            "models": {"vision_encoder": {"id": str(vision_dir)}, "llm": {"id": str(llm_dir)}},
            "training": {"processes_per_node": workers, "stage1": stage, "stage2": stage},
        }
    )
    storage = Storage(config.storage)
    mixture_url = write_mixture(storage, global_batch * steps, text_tokens)
    start_manifest = ModelManifest(asset="vlm_stage1", model_url=str(start), stage="stage1", steps=0, examples=0, mixture_url=mixture_url)
    job = stage_job(config.training, config.models, storage, "stage2", storage.read_manifest("stage2_mixture", None), start_manifest)
    job_path = work / "job.json"
    job_path.write_text(job.model_dump_json())
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={workers}",
        "-m",
        "asagi_dagster.train",
        "--job",
        str(job_path),
    ]
    log(
        f"{scale}: {workers} worker(s), micro batch {micro_batch} x accumulation {accumulation} = global {global_batch}, "
        f"{steps} steps, sequences of image + {text_tokens} text tokens, {'packed' if packing else 'padded'}, checkpointing {checkpointing}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT)
    lines = run.stdout.splitlines()
    if run.returncode:
        raise RuntimeError("\n".join(lines[-30:]) + run.stderr[-4000:])
    for line in lines:
        if not line.startswith('{"metrics"'):
            log(line)
    metrics = [json.loads(line)["metrics"] for line in lines if line.startswith('{"metrics"')]
    timed = [m for m in metrics if m["step"] > warmup_steps] or metrics
    result = {
        "scale": scale,
        "workers": workers,
        "packing": packing,
        "global_batch": global_batch,
        "text_tokens": text_tokens,
        "tokens_per_s": statistics.median(m["tokens_per_s"] for m in timed),
        "mfu": statistics.median(m["mfu"] for m in timed),
        "step_s": statistics.median(m["step_s"] for m in timed),
        "peak_memory_gib": max((m.get("peak_memory_gib", 0.0) for m in metrics), default=0.0),
    }
    log(
        f"median over steps {timed[0]['step']}..{timed[-1]['step']}: {result['tokens_per_s']:,.0f} tokens/s, "
        f"{result['tokens_per_s'] / workers:,.0f} per worker, MFU {result['mfu']:.1%}, peak memory {result['peak_memory_gib']:.1f} GiB"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SHAPES), default="asagi-2b")
    parser.add_argument("--gpus", type=int, default=None, help="torchrun workers (default: every visible GPU, or 1)")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (less memory, lower MFU)")
    parser.add_argument("--padded", action="store_true", help="pad micro batches instead of packing them")
    args = parser.parse_args()
    try:
        result = run_shape(
            args.scale,
            args.gpus,
            args.micro_batch,
            args.accumulation,
            args.steps,
            args.warmup_steps,
            args.text_tokens,
            args.checkpointing,
            packing=not args.padded,
        )
    except RuntimeError as failed:
        sys.exit(str(failed))
    if args.scale == "asagi-2b":
        print(f"MFU target >= {TARGET_MFU:.0%}: {'met' if result['mfu'] >= TARGET_MFU else 'NOT met'}")


if __name__ == "__main__":
    main()
