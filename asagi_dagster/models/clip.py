"""A CLIP-style dual encoder (CLIP, SigLIP, Japanese CLIP) through transformers:
unit-length image and text embeddings, so a dot product is the cosine similarity."""

from __future__ import annotations

import numpy as np
from PIL import Image

from asagi_dagster.models.settings import ModelRef


class DualEncoder:
    def __init__(self, model: ModelRef, allow_hub: bool = False, trust_remote_code: bool = False, text: bool = True):
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self._torch = torch
        options = {"revision": model.revision, "local_files_only": not allow_hub, "trust_remote_code": trust_remote_code}
        self.processor = AutoImageProcessor.from_pretrained(model.id, **options)
        self.tokenizer = AutoTokenizer.from_pretrained(model.id, **options) if text else None
        self.model = AutoModel.from_pretrained(model.id, **options).eval()
        self.name = f"{model.id}@{model.revision}" if model.revision else model.id
        size = getattr(self.processor, "size", {}) or {}
        self.input_side = int(size.get("height") or size.get("shortest_edge") or 224)

    def image_features(self, images: list[Image.Image]) -> np.ndarray:
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        with self._torch.inference_mode():
            return _unit(self.model.get_image_features(pixel_values=inputs["pixel_values"]))

    def text_features(self, texts: list[str]) -> np.ndarray:
        assert self.tokenizer is not None, "a DualEncoder made with text=False has no text features"
        inputs = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with self._torch.inference_mode():
            return _unit(self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")))


def _unit(features) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    tensor = features.pooler_output if hasattr(features, "pooler_output") else features
    vectors = tensor.float().cpu().numpy()
    return unit_rows(vectors)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
