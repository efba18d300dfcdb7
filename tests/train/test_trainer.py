"""The training program as it really runs: torchrun with two processes on gloo, FSDP2,
checkpoints on the storage root, killed and resumed, stage 2 from stage 1, the export
loaded by transformers (and by vLLM in test_vllm_export.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from asagi_dagster.train.trainer import TrainJob, lr_at, stage_job
from tests.conftest import BUCKET, write_profile
from tests.train.helpers import start_model, write_mixture

PROJECT = Path(__file__).resolve().parents[2]


def training_profile(directory: Path, steps: int, checkpoint_every: int, root: str | None = None, **stage) -> Path:
    base = {
        "mixture": {"ja_captions": 1.0},
        "global_batch": 4,
        "lr": 1e-3,
        "steps": steps,
        "checkpoint_every": checkpoint_every,
        "log_every": 1,
        "max_text_tokens": 96,
        **stage,
    }
    overrides = {
        "models": {"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
        "training": {"processes_per_node": 2, "export_dtype": "float32", "stage1": base, "stage2": {**base, "lr": 1e-4}},
    }
    if root:
        overrides["storage"] = {"root": root, "s3": {"endpoint_url": os.environ["ASAGI_TEST_S3"]}}
    return write_profile(directory, **overrides)


def torchrun(job: TrainJob, directory: Path, name: str) -> subprocess.Popen:
    path = directory / f"{name}.json"
    path.write_text(job.model_dump_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "asagi_dagster.train", "--job", str(path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT, start_new_session=True)


def kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its workers at once, as a node or pod dying would (the
    workers run in sessions of their own, so killing torchrun's group is not enough)."""
    import psutil

    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.kill()


def metrics_of(lines: list[str]) -> dict[int, dict]:
    found = {}
    for line in lines:
        if line.startswith('{"metrics"'):
            metrics = json.loads(line)["metrics"]
            found[metrics["step"]] = metrics
    return found


def finish(process: subprocess.Popen) -> list[str]:
    output, _ = process.communicate(timeout=300)
    lines = output.splitlines()
    assert process.returncode == 0, "\n".join(lines[-60:])
    return lines


def test_lr_warms_up_then_follows_the_cosine_to_the_floor(tmp_path):
    stage = load_config(training_profile(tmp_path, 100, 10)).training.stage1.model_copy(update={"lr": 1.0, "min_lr_ratio": 0.1})
    lrs = [lr_at(step, 100, stage) for step in range(100)]
    assert lrs[0] == pytest.approx(1 / 3) and lrs[2] == pytest.approx(1.0)  # 3% of 100 steps: 3 warmup steps
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_a_killed_run_resumes_on_the_uninterrupted_loss_curve(tmp_path):
    config = load_config(training_profile(tmp_path, steps=14, checkpoint_every=4))
    storage = Storage(config.storage)
    write_mixture(storage, "stage1_mixture", 24)
    job = stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None)
    whole = metrics_of(finish(torchrun(job, tmp_path, "whole")))
    assert sorted(whole) == list(range(1, 15))

    killed_job = job.model_copy(update={"checkpoint_dir": job.checkpoint_dir + "-killed", "output_url": job.output_url + "-killed"})
    run = torchrun(killed_job, tmp_path, "killed")
    seen = []
    for line in run.stdout:  # step 6 reported: the step-4 checkpoint is committed
        seen.append(line.rstrip("\n"))
        if metrics_of(seen[-1:]).get(6):
            kill_tree(run.pid)
            break
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    latest = json.loads(Path(killed_job.checkpoint_dir, "latest.json").read_text())["step"]
    assert 4 <= latest < 14 and not Path(killed_job.output_url).exists()

    lines = finish(torchrun(killed_job, tmp_path, "resumed"))
    resumed = metrics_of(lines)
    assert any(f"resumed stage1 from step {latest} of 14" in line for line in lines), "\n".join(line for line in lines if "stage1" in line or "metrics" in line)
    assert sorted(resumed) == list(range(latest + 1, 15))
    for step, metrics in resumed.items():  # same data, weights, optimizer and lr: the same numbers
        assert metrics["loss"] == pytest.approx(whole[step]["loss"], rel=1e-6, abs=1e-7), step
        assert metrics["lr"] == pytest.approx(whole[step]["lr"], rel=1e-12)
        assert metrics["trained_tokens"] == whole[step]["trained_tokens"]
    ours, theirs = load_file(f"{killed_job.output_url}/model.safetensors"), load_file(f"{job.output_url}/model.safetensors")
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_compiled_layers_train_as_the_eager_ones(tmp_path):
    """training.compile: each layer through torch.compile (aot_eager here: the graph
    capture and autograd of inductor's path without generating code, on FSDP2 with two
    processes) gives the eager run's losses."""
    losses = {}
    for mode in ("off", "aot_eager"):
        (tmp_path / mode).mkdir()
        config = load_config(training_profile(tmp_path / mode, steps=3, checkpoint_every=3))
        config = config.model_copy(update={"training": config.training.model_copy(update={"compile": mode})})
        storage = Storage(config.storage)
        write_mixture(storage, "stage1_mixture", 12)
        lines = finish(
            torchrun(stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None), tmp_path, mode)
        )
        assert any(f"layers compiled: {mode}" in line for line in lines)
        losses[mode] = {step: m["loss"] for step, m in metrics_of(lines).items()}
    assert sorted(losses["off"]) == [1, 2, 3]
    for step, loss in losses["off"].items():
        assert losses["aot_eager"][step] == pytest.approx(loss, rel=1e-5), step


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch):
    monkeypatch.setenv("ASAGI_TEST_S3", s3_endpoint)
    return f"s3://{BUCKET}/asagi"


def test_stage1_then_stage2_on_s3_freeze_what_asagi_freezes_and_load_in_transformers(tmp_path, s3_root):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = load_config(training_profile(tmp_path, steps=3, checkpoint_every=2, root=s3_root))
    storage = Storage(config.storage)
    write_mixture(storage, "stage1_mixture", 12)
    write_mixture(storage, "stage2_mixture", 12)
    job1 = stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None)
    finish(torchrun(job1, tmp_path, "stage1"))
    assert storage.fs.exists(f"{job1.checkpoint_dir}/step-00000002/.metadata")  # DCP on the s3 root
    assert storage.read_json(f"{job1.checkpoint_dir}/latest.json") == {"step": 3, "world": 2}

    from asagi_dagster.storage import ModelManifest

    stage1 = ModelManifest(asset="vlm_stage1", model_url=job1.output_url, stage="stage1", steps=3, examples=12, mixture_url=job1.mixture_url)
    job2 = stage_job(config.training, config.models, storage, "stage2", storage.read_manifest("stage2_mixture", None), stage1)
    assert job2.start_from == job1.output_url
    finish(torchrun(job2, tmp_path, "stage2"))

    local = {}
    for stage, job in (("stage1", job1), ("stage2", job2)):
        local[stage] = tmp_path / f"{stage}-model"
        storage.fs.get(storage.strip_protocol(job.output_url) + "/", str(local[stage]) + "/", recursive=True)
    start, _ = start_model()
    before = {k: v for k, v in start.state_dict().items()}
    weights = {stage: AutoModelForImageTextToText.from_pretrained(path).state_dict() for stage, path in local.items()}

    def part(state, prefix):
        return {k: v for k, v in state.items() if k.startswith(prefix)}

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()

    tower, projector, llm = "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."
    assert same(part(weights["stage1"], tower), part(before, tower))  # stage 1: tower and LLM frozen
    assert same(part(weights["stage1"], llm), part(before, llm))
    assert not same(part(weights["stage1"], projector), part(before, projector))
    assert same(part(weights["stage2"], tower), part(weights["stage1"], tower))  # stage 2: tower frozen
    assert not same(part(weights["stage2"], llm), part(weights["stage1"], llm))
    # Stage 2 starts from stage 1's projector: a few small steps keep it near there.
    moved = max((weights["stage2"][k] - weights["stage1"][k]).abs().max().item() for k in part(before, projector))
    start_gap = max((weights["stage1"][k] - before[k]).abs().max().item() for k in part(before, projector))
    assert moved < start_gap

    model = AutoModelForImageTextToText.from_pretrained(local["stage2"]).eval()
    processor = AutoProcessor.from_pretrained(local["stage2"])
    assert model.config.vision_feature_select_strategy == "full" and model.config.vision_feature_layer == -2
    assert model.config.projector_hidden_act == "gelu"
    from PIL import Image

    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "説明して"}]}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=text, images=[Image.new("RGB", (64, 48), (10, 120, 200))], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 6
    assert isinstance(processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :]), str)
