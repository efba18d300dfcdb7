"""The one prepared GPU check (issue 19 §4): everything the first GPU hour should confirm,
in one run of at most 8 minutes on one H100 or H200 without network or weights.

1. ``shape``: the stage 2 step at the Asagi-2B shape (random SigLIP-so400m-384 and
   llm-jp-3-1.8b-shaped towers, bf16, FSDP2 on one GPU), packed and padded: tokens/s,
   MFU and peak memory, through the real trainer (benchmarks/bench_train_shape.py).
2. ``resume``: the trainer's CUDA path end to end at tiny scale: a run, the same run
   killed with SIGKILL after a checkpoint and resumed, and the losses compared step by
   step (they must be equal).
3. ``generation``: batched against one-at-a-time transformers generation on the GPU
   (output tokens/s), and greedy outputs batched equal to alone.

It writes one JSON with the figures, each part's seconds and error if any, and the
versions. ``--dry`` runs the same parts on the CPU at tiny scale, hiding any GPU: what CI
runs (tests/test_gpu_check.py), so the script is known to start.

    bash benchmarks/gpu_check.sh [--dry] [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def environment() -> dict:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


def shape(dry: bool, log) -> list[dict]:
    from benchmarks.bench_train_shape import run_shape

    settings = (
        {"scale": "tiny", "steps": 4, "warmup_steps": 1, "text_tokens": 128, "micro_batch": 2}
        if dry
        else {"scale": "asagi-2b", "steps": 8, "warmup_steps": 2, "text_tokens": 1024, "micro_batch": 4}
    )
    return [run_shape(gpus=1, packing=packing, log=log, **settings) for packing in (True, False)]


def resume(dry: bool, log) -> dict:
    """A tiny stage 1 run whole, then killed after its step-4 checkpoint and resumed."""
    from asagi_dagster.config import AsagiConfig
    from asagi_dagster.storage import Storage
    from asagi_dagster.train.trainer import stage_job
    from tests.train.helpers import write_mixture

    work = Path(tempfile.mkdtemp(prefix="asagi-gpu-check-"))
    stage = {
        "mixture": {"ja_captions": 1.0},
        "global_batch": 4,
        "micro_batch": 2,
        "lr": 1e-3,
        "steps": 10,
        "checkpoint_every": 4,
        "log_every": 1,
        "max_text_tokens": 96,
    }
    config = AsagiConfig.model_validate(
        {
            "profile": "gpu-check",
            "storage": {"root": str(work / "data")},
            "sources": {"web": {"inbox": str(work / "inbox")}},
            "dagster": {"home": str(work / "dagster")},
            "models": {"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
            "training": {"processes_per_node": 1, "export_dtype": "float32", "stage1": stage},
        }
    )
    storage = Storage(config.storage)
    write_mixture(storage, "stage1_mixture", 24)
    job = stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None)
    killed_job = job.model_copy(update={"checkpoint_dir": job.checkpoint_dir + "-killed", "output_url": job.output_url + "-killed"})
    whole = _losses(_torchrun(job, work / "whole.json").communicate(timeout=600)[0])
    run = _torchrun(killed_job, work / "killed.json")
    seen = []
    for line in run.stdout:  # step 6 reported: the step-4 checkpoint is committed
        seen.append(line)
        if 6 in _losses("".join(seen[-1:])):
            _kill_tree(run.pid)
            break
    run.wait(timeout=60)
    resumed_out = _torchrun(killed_job, work / "resumed.json").communicate(timeout=600)[0]
    resumed = _losses(resumed_out)
    resumed_from = min(resumed) - 1 if resumed else None
    differences = [abs(resumed[step] - whole[step]) for step in resumed if step in whole]
    result = {
        "steps": len(whole),
        "killed_at_step": 6,
        "resumed_from": resumed_from,
        "steps_compared": len(differences),
        "max_loss_difference": max(differences, default=None),
    }
    result["exact"] = bool(differences) and max(differences) <= 1e-6 * max(1.0, max(whole.values()))
    log(
        f"resume: whole {len(whole)} steps; killed at step 6, resumed from {resumed_from}; "
        f"{len(differences)} steps compared, max loss difference {result['max_loss_difference']}"
    )
    return result


def _kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its worker at once, as a node dying would (the worker runs in a
    session of its own, so torchrun's process group is not enough)."""
    import psutil

    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)


def _torchrun(job, path: Path) -> subprocess.Popen:
    path.write_text(job.model_dump_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "asagi_dagster.train", "--job", str(path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT, start_new_session=True)


def _losses(output: str) -> dict[int, float]:
    found = {}
    for line in output.splitlines():
        if line.startswith('{"metrics"'):
            metrics = json.loads(line)["metrics"]
            found[metrics["step"]] = metrics["loss"]
    return found


def generation(dry: bool, log) -> dict:
    from asagi_dagster.engines import Request, SamplingSettings, open_generator
    from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA
    from asagi_dagster.synth.settings import GeneratorSettings
    from benchmarks.bench_generation import measure, requests

    model = {"model": BUILTIN_TINY_LLAMA, "licence": "Apache-2.0", "outputs_trainable": True}
    prompts = requests(64 if dry else 256, 32)
    rates = {}
    for batch_size in (1, 64):
        _, tokens, seconds = measure(GeneratorSettings(**model, batch_size=batch_size), prompts)
        rates[batch_size] = tokens / seconds
    greedy = [Request(p.messages, SamplingSettings(temperature=0, max_tokens=16, repetition_penalty=1.0), seed=0) for p in prompts[:8]]
    batched = open_generator(GeneratorSettings(**model, batch_size=8)).generate(greedy)
    alone = open_generator(GeneratorSettings(**model, batch_size=1)).generate(greedy)
    result = {
        "prompts": len(prompts),
        "one_at_a_time_tokens_per_s": rates[1],
        "batched_tokens_per_s": rates[64],
        "ratio": rates[64] / rates[1],
        "greedy_batched_equals_alone": batched == alone,
    }
    log(
        f"generation: one at a time {rates[1]:,.0f} tokens/s, batches of 64 {rates[64]:,.0f} tokens/s "
        f"({result['ratio']:.1f}x); greedy batched = alone: {result['greedy_batched_equals_alone']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="on the CPU at tiny scale, any GPU hidden")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()
    if args.dry:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, here and in every torchrun it starts
    sys.path.insert(0, str(PROJECT))
    log = lambda message: print(message, flush=True)  # noqa: E731
    report = {"dry": args.dry, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment()}
    failed = []
    for name, part in (("shape", shape), ("resume", resume), ("generation", generation)):
        began = time.perf_counter()
        try:
            report[name] = {"result": part(args.dry, log)}
        except Exception:
            failed.append(name)
            report[name] = {"error": traceback.format_exc()[-4000:]}
            log(f"{name} FAILED:\n{report[name]['error']}")
        report[name]["seconds"] = round(time.perf_counter() - began, 1)
    report["failed"] = failed
    Path(args.out).write_text(json.dumps(report, indent=2))
    log(f"wrote {args.out}; " + (f"FAILED: {', '.join(failed)}" if failed else "every part ran"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
