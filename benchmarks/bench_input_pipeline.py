"""Does the input pipeline keep an H100 fed? The trainer's own pipeline (``StepBatches``
in DataLoader workers: JPEG decode in draft mode, the SigLIP-384 processor, tokenizing,
packing or padding) feeds a stand-in step that sleeps for the modelled H100 time of
each step at the Asagi-2B shape: the step's FLOPs (``FlopModel`` of SigLIP-so400m-384
and a Llama of llm-jp-3-1.8b's shape, on the step's real sequence lengths) at 50% MFU of
989 TFLOP/s. Printed per stage shape, packed and padded: the fraction of loop time spent
waiting for data. Target: at most 5% with 2 workers.

The images are real photos (scikit-image's sample photos, CC0/public domain) upscaled
to web-photo size (2048 x 1536) and saved as JPEG quality 90 in the mixture, so each
example pays a full-size JPEG's decode. The stand-in step sleeps: on a GPU node the
training process spends that time launching kernels, here the workers get the cores.

    python -m benchmarks.bench_input_pipeline [--workers 2] [--steps 8] [--no-draft]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

H100_BF16_FLOPS = 989e12
MFU = 0.5
TARGET = 0.05
PHOTO_SIZE = (2048, 1536)
# Asagi-2B: SigLIP-so400m-patch14-384 (27 layers, hidden 1152, MLP 4304) and llm-jp-3-1.8b
# (24 layers, hidden 2048, MLP 7168, vocab 99,584; untied head), a 2-layer MLP projector.
LLM = {"layers": 24, "hidden": 2048, "mlp": 7168, "vocab": 99584}
VISION = {"layers": 27, "hidden": 1152, "mlp": 4304, "image": 384, "patch": 14}
SHAPES = {
    # stage 1: short captions; stage 2: instruction data up to 1,024 text tokens (1,753 with the image)
    "stage1": {"micro_batch": 8, "micro_batches": 4, "text_tokens": 64, "llm_trained": False},
    "stage2": {"micro_batch": 4, "micro_batches": 4, "text_tokens": 1024, "llm_trained": True},
}


def flop_model(llm_trained: bool):
    from asagi_dagster.train.flops import FlopModel

    per_llm_layer = 4 * LLM["hidden"] ** 2 + 3 * LLM["hidden"] * LLM["mlp"]
    per_vision_layer = 4 * VISION["hidden"] ** 2 + 2 * VISION["hidden"] * VISION["mlp"]
    return FlopModel(
        llm_params=LLM["layers"] * per_llm_layer + LLM["vocab"] * LLM["hidden"],
        llm_layers=LLM["layers"],
        llm_hidden=LLM["hidden"],
        vision_params=VISION["layers"] * per_vision_layer,
        vision_layers=VISION["layers"],
        vision_hidden=VISION["hidden"],
        patches=(VISION["image"] // VISION["patch"]) ** 2,
        projector_params=VISION["hidden"] * LLM["hidden"] + LLM["hidden"] ** 2,
        llm_trained=llm_trained,
    )


def photos() -> list[bytes]:
    import numpy as np
    import skimage.data
    from PIL import Image

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "cat", "hubble_deep_field"]
    out = []
    for name in names:
        pixels = getattr(skimage.data, name)()
        image = Image.fromarray(np.asarray(pixels)).convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def write_mixture(storage, images: list[bytes], examples: int, text_tokens: int) -> str:
    from asagi_dagster.storage import StageWriter
    from asagi_dagster.train.mixture import MIXTURE, VERSION

    sentence = "窓辺で外を眺める猫と、海の見える町の坂道の写真です。"
    with StageWriter(storage, "mixture", None, MIXTURE, VERSION) as out:
        for i in range(examples):
            out.count_in()
            response = sentence * max(1, text_tokens // 12)
            out.write(
                {
                    "example_id": f"x{i}",
                    "instruction": "この画像を詳しく説明してください。",
                    "response": response,
                    "bytes": images[i % len(images)],
                    "source": "ja_captions",
                    "pair_id": f"p{i}",
                    "image_sha256": str(i),
                    "image_phash": i,
                    "vg_image_id": None,
                    "candidates": 1,
                }
            )
    storage.write_manifest(out.manifest)
    return storage.strip_protocol(out.manifest.data_url)


def measure(storage, settings, mixture: str, encoder, pad_id: int, shape: dict, packing: bool, workers: int, steps: int, warmup: int) -> dict:
    from asagi_dagster.train import data

    flops = flop_model(shape["llm_trained"])
    global_batch = shape["micro_batch"] * shape["micro_batches"]
    dataset = data.StepBatches(settings, mixture, 0, encoder, pad_id, packing, global_batch, shape["micro_batch"], 1, 0, 0, warmup + steps)
    loader = iter(data.step_loader(dataset, workers, pin_memory=False))
    waited = total = modelled = 0.0
    for step in range(warmup + steps):
        began = time.perf_counter()
        built = next(loader)
        got = time.perf_counter()
        step_s = flops.step_flops(built["lengths"], len(built["lengths"])) / (MFU * H100_BF16_FLOPS)
        time.sleep(step_s)
        if step >= warmup:  # the first steps include starting the workers
            waited += got - began
            total += time.perf_counter() - began
            modelled += step_s
    return {"wait": waited / total, "step_s": modelled / steps, "tokens": sum(built["lengths"]) / len(built["lengths"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size, to see what draft mode saves")
    args = parser.parse_args()
    from transformers import SiglipImageProcessor

    from asagi_dagster.storage import Storage, StorageSettings
    from asagi_dagster.train import data
    from tests.train.helpers import start_model

    _, processor = start_model()  # the tokenizer the project trains on the spot, and its image token
    processor.image_processor = SiglipImageProcessor(size={"height": VISION["image"], "width": VISION["image"]})
    image_tokens = (VISION["image"] // VISION["patch"]) ** 2
    images = photos()
    print(
        f"{len(images)} photos as {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs, {sum(map(len, images)) / len(images) / 1e6:.2f} MB on average; "
        f"{args.workers} workers; step modelled at {MFU:.0%} MFU of {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s"
    )
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-input-") as folder:
        settings = StorageSettings(root=folder)
        storage = Storage(settings)
        for stage, shape in SHAPES.items():
            encoder = data.Encoder(processor, image_tokens, max_text_tokens=shape["text_tokens"])
            if args.no_draft:
                encoder.image_size = None
            examples = shape["micro_batch"] * shape["micro_batches"] * (args.steps + args.warmup)
            mixture = write_mixture(storage, images, examples, shape["text_tokens"])
            for packing in (True, False):
                result = measure(storage, settings, mixture, encoder, processor.tokenizer.pad_token_id, shape, packing, args.workers, args.steps, args.warmup)
                met = result["wait"] <= TARGET
                failures += [] if met else [f"{stage} {'packed' if packing else 'padded'}"]
                print(
                    f"{stage} {'packed' if packing else 'padded'}: {result['tokens']:.0f} tokens per example, modelled step {result['step_s'] * 1e3:.0f} ms, "
                    f"waiting for data {result['wait']:.1%} of the loop (target <= {TARGET:.0%}): {'met' if met else 'NOT met'}"
                )
    print("all met" if not failures else f"NOT met: {', '.join(failures)}")


if __name__ == "__main__":
    main()
