"""A tiny stage-1 starting model and hand-made mixtures for the training tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from asagi_dagster.models.settings import ModelRef
from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.train.mixture import MIXTURE, VERSION

TINY_VISION = ModelRef(id="builtin:tiny-siglip")
TINY_LLM = ModelRef(id="builtin:tiny-llama-ja")
ANSWERS = ["赤い花が咲いている庭の写真です。", "窓辺で外を眺める猫", "宇宙服を着た飛行士が笑っている。海の見える町の坂道です。", "はい"]


def start_model():
    from asagi_dagster.train.model import build_stage1_start

    return build_stage1_start(TINY_VISION, TINY_LLM, allow_hub=False, seed=0)


def png(seed: int, size=(40, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def example(i: int) -> dict:
    """A length-skewed example: every fourth answer is long."""
    answer = ANSWERS[i % len(ANSWERS)] * (6 if i % 4 == 2 else 1)
    return {"example_id": f"x{i}", "instruction": "この画像を説明してください。", "response": answer, "bytes": png(i)}


def write_mixture(storage: Storage, asset: str, examples: int) -> str:
    with StageWriter(storage, asset, None, MIXTURE, VERSION) as out:
        for i in range(examples):
            out.count_in()
            row = example(i)
            out.write({**row, "source": "ja_captions", "pair_id": f"p{i}", "image_sha256": str(i), "image_phash": i, "vg_image_id": None, "candidates": 1})
    storage.write_manifest(out.manifest)
    return out.manifest.data_url
