"""The training loop reads nothing back from the device between log steps (issue 19 §2).

Every call that makes the host wait for the device (a tensor read as a Python number or
list, a copy to the host, ``torch.cuda.synchronize``) is counted over a run of 3 steps
and a run of 9 with the same log and checkpoint steps (the first and the last): the
longer run may not make one more. On this CPU machine our calls are the same ones a GPU
run makes, so a per-step ``.item()`` or ``synchronize`` coming back fails here.

Counted: calls made by this project's code (and any ``synchronize``). Not counted: the
libraries' own, which a CPU run cannot tell from a GPU one: CPU AdamW reads its step
count (fused CUDA AdamW does not), and transformers 5's Llava formats the image-token
count into a check's message and looks for packed sequences in the position ids on
every forward (a read per micro batch on a GPU too; docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from asagi_dagster.train.trainer import stage_job
from tests.conftest import write_profile
from tests.train.helpers import write_mixture

PROJECT = Path(__file__).resolve().parents[2]

COUNT = """
import collections, json, sys
import torch
from asagi_dagster.train.trainer import TrainJob, train

counts = collections.Counter()

def counted(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if "/asagi_dagster/" in caller or name == "synchronize":  # ours: the libraries' own are theirs (see the module)
            counts[name] += 1
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy"):
    counted(torch.Tensor, name)
counted(torch.cuda, "synchronize")
job = TrainJob.model_validate_json(open(sys.argv[1]).read())
reported = []
train(job, reported.append, lambda message: None)
print("COUNTS " + json.dumps({"counts": counts, "reported": [m["step"] for m in reported]}))
"""


def _counts(tmp_path: Path, steps: int, name: str) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    stage = {
        "mixture": {"ja_captions": 1.0},
        "global_batch": 4,
        "micro_batch": 2,
        "lr": 1e-3,
        "steps": steps,
        "checkpoint_every": 1000,
        "log_every": 1000,
        "max_text_tokens": 96,
    }
    profile = write_profile(
        folder,
        models={"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
        training={"processes_per_node": 1, "export_dtype": "float32", "stage1": stage},
    )
    config = load_config(profile)
    storage = Storage(config.storage)
    write_mixture(storage, "stage1_mixture", 16)
    job = stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None)
    (folder / "job.json").write_text(job.model_dump_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", COUNT, str(folder / "job.json")], capture_output=True, text=True, env=env, cwd=PROJECT, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("COUNTS ")]
    assert run.returncode == 0 and lines, run.stderr[-4000:]
    return json.loads(lines[0].removeprefix("COUNTS "))


def test_steps_between_log_steps_read_nothing_back_from_the_device(tmp_path):
    _counts(tmp_path, 3, "warm-up")  # builds the builtin tiny models once: their set-up is not the loop's
    short, long = _counts(tmp_path, 3, "short"), _counts(tmp_path, 9, "long")
    assert short["reported"] == [1, 3] and long["reported"] == [1, 9]  # the same two log steps
    assert long["counts"] == short["counts"], (short["counts"], long["counts"])
    assert short["counts"].get("tolist", 0) >= 2  # the log steps' reads are counted: the counting works
