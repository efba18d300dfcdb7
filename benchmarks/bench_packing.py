"""Padding-free packing versus padding, side by side in one run, on a length-skewed batch.

The batch is what a VQA + caption mixture gives: a few long answers among many short
ones. Padding stretches every row to the longest; packing lays the examples end to end
in one row with position ids restarting, so the model computes only real tokens. Both
modes run the same training step (forward, loss on answer tokens, backward; projector
and LLM trained as in stage 2) on the same encoded examples, alternating, and the figure
is real tokens (image + text) per second. Expected: packing > 1.3x padding.

The model is a small random Llava (SigLIP tower, GELU projector, a Llama of
``--hidden`` x ``--layers``) built here; nothing is downloaded.

    python -m benchmarks.bench_packing [--hidden 256] [--layers 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

TARGET = 1.3


def build_model(hidden: int, layers: int):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipImageProcessor, SiglipVisionConfig

    from asagi_dagster.models.corpus import tokenizer_corpus
    from asagi_dagster.models.tiny import tiny_llama, tiny_siglip
    from asagi_dagster.train.model import _processor, image_token_count

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama(tokenizer_corpus()))
    vision = SiglipVisionConfig.from_pretrained(tiny_siglip())
    vision.vision_use_head = False
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    processor = _processor(SiglipImageProcessor.from_pretrained(tiny_siglip()), tokenizer, vision.patch_size)
    return model, processor, image_token_count(config)


def skewed_examples(count: int, long_every: int) -> list[dict]:
    """Short captions and VQA answers with one long description every ``long_every``."""
    import io

    import numpy as np
    from PIL import Image

    rows = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        answer = "窓辺で外を眺める茶トラの猫が写っている。" * (40 if i % long_every == 0 else 1)
        rows.append({"instruction": "この画像を説明してください。", "response": answer, "bytes": buffer.getvalue()})
    return rows


def step_seconds(model, batch: dict) -> float:
    from asagi_dagster.train.data import IGNORE, token_loss_sum

    began = time.perf_counter()
    loss = token_loss_sum(model, batch)
    (loss / max(1, int((batch["labels"][:, 1:] != IGNORE).sum()))).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - began


def main() -> None:
    from asagi_dagster.train.data import Encoder, packed_batch, padded_batch
    from asagi_dagster.train.model import set_trainable

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--long-every", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model, processor, image_tokens = build_model(args.hidden, args.layers)
    set_trainable(model, "stage2")
    model.train()
    encoder = Encoder(processor, image_tokens, max_text_tokens=2048)
    examples = [encoder.encode(row) for row in skewed_examples(args.examples, args.long_every)]
    lengths = [len(e.input_ids) for e in examples]
    real = sum(lengths)
    batches = {"padding": padded_batch(examples, encoder, processor.tokenizer.pad_token_id), "packing": packed_batch(examples, encoder)}
    print(
        f"{args.examples} examples, lengths {min(lengths)}..{max(lengths)} (image {image_tokens} + text), {real} real tokens; "
        f"padded rows hold {len(examples) * max(lengths)} positions"
    )
    for batch in batches.values():  # warm-up
        step_seconds(model, batch)
    times: dict[str, list[float]] = {name: [] for name in batches}
    for _ in range(args.repeats):  # alternate, so both see the same machine noise
        for name, batch in batches.items():
            times[name].append(step_seconds(model, batch))
    rates = {name: real / statistics.median(ts) for name, ts in times.items()}
    for name, rate in rates.items():
        print(f"{name:>8}: {rate:8.0f} real tokens/s (median of {args.repeats} steps, {statistics.median(times[name]) * 1000:.0f} ms)")
    ratio = rates["packing"] / rates["padding"]
    print(f"packing / padding: {ratio:.2f}x (target > {TARGET}x): {'PASS' if ratio > TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
