"""benchmarks/gpu_check.sh in its dry mode: every part of the GPU check runs on the CPU at
tiny scale and reports its figures, so the one prepared GPU call is known to start."""

import json
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_end_to_end_dry(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry", "--out", str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["failed"] == [] and report["environment"]["torch"]
    packed, padded = report["shape"]["result"]
    assert (packed["packing"], padded["packing"]) == (True, False)
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in (packed, padded))
    resume = report["resume"]["result"]
    assert resume["exact"] and resume["resumed_from"] == 4 and resume["steps_compared"] == 6
    generation = report["generation"]["result"]
    assert generation["greedy_batched_equals_alone"] and generation["batched_tokens_per_s"] > 0
