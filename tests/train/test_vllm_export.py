"""The exported model loads in vLLM's Llava loader with image input and generates the
same greedy tokens as transformers; a checkpoint in the names transformers 5 saves
(vision tower without ``vision_model.``) is refused, which is why the export renames."""

import json
import os
import subprocess
import sys
from pathlib import Path

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from asagi_dagster.train.trainer import stage_job
from tests.train.helpers import start_model, write_mixture
from tests.train.test_trainer import training_profile

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]


def _vllm(vllm_python: str, folder: Path, refused_folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "vllm_shim"), str(PROJECT)])}
    command = [vllm_python, str(HERE / "vllm_llava_check.py"), str(folder), str(refused_folder)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT, timeout=500)


def test_vllm_loads_the_export_and_matches_transformers_greedy_tokens(tmp_path, vllm_python):
    config = load_config(training_profile(tmp_path, steps=1, checkpoint_every=1))
    storage = Storage(config.storage)
    write_mixture(storage, "stage1_mixture", 4)
    job = stage_job(config.training, config.models, storage, "stage1", storage.read_manifest("stage1_mixture", None), None)
    (tmp_path / "job.json").write_text(job.model_dump_json())
    # Without torchrun: the program runs as a world of one.
    run = subprocess.run(
        [sys.executable, "-m", "asagi_dagster.train", "--job", str(tmp_path / "job.json")], capture_output=True, text=True, cwd=PROJECT, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    # The same model saved as transformers 5 names it: vLLM cannot place the vision tower.
    model, processor = start_model()
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    processor.save_pretrained(plain)

    checked = _vllm(vllm_python, Path(job.output_url), plain)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-4000:]
    result = json.loads(next(line for line in checked.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["prompt_ids_equal"]
    assert result["vllm"] == result["transformers"] and len(result["vllm"]) == 8
    assert result["refusal"], "vLLM loaded the checkpoint in transformers 5's names"
    assert "There is no module or parameter named 'vision_tower.embeddings'" in checked.stdout  # the worker's error, in vLLM's log
