"""Image encoders for the document-image filter: L2-normalized embeddings, so a dot
product is the cosine similarity.

- A Hugging Face vision-language model (CLIP or SigLIP) by id or local directory: the
  cluster profile's choice (e.g. google/siglip-so400m-patch14-384). Loaded with
  ``local_files_only`` unless the profile allows the hub.
- ``builtin:pixel-stats``: the embedded default. No weights: four page statistics
  that tell a document (flat paper, dark strokes, two tones, little colour) from a
  photo, each mapped to about [-1, 1] with documents positive, so cosine similarity
  to document references separates them (tested on scikit-image's real images).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image, ImageFilter

from asagi_dagster.models.clip import DualEncoder, unit_rows
from asagi_dagster.models.settings import ModelRef

BUILTIN_PIXEL_STATS = "builtin:pixel-stats"


class ImageEncoder(Protocol):
    name: str  # what produced the embeddings, recorded with them
    input_side: int  # images are decoded at about this size before encoding

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """(len(images), dim) float32, each row of unit length."""


def load_image_encoder(model: ModelRef, allow_hub: bool = False) -> ImageEncoder:
    if model.id == BUILTIN_PIXEL_STATS:
        return PixelStatsEncoder()
    return HFImageEncoder(model, allow_hub)


class PixelStatsEncoder:
    name = BUILTIN_PIXEL_STATS
    input_side = 256

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return unit_rows(np.stack([self._features(image) for image in images]).astype(np.float32))

    @staticmethod
    def _features(image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        grey = rgb.mean(axis=2)
        # Detail relative to the local background, so uneven lighting of a scanned or
        # photographed page does not matter.
        background = np.asarray(image.convert("L").filter(ImageFilter.BoxBlur(6)), dtype=np.float32) / 255.0
        detail = grey - background
        spread = detail.std() + 1e-6
        skew = ((detail - detail.mean()) ** 3).mean() / spread**3  # ink on paper: strongly negative
        flat = (np.abs(detail) < 0.03).mean()  # paper is locally flat; textures are not
        low, high = np.percentile(grey, [5, 95])
        stretched = np.clip((grey - low) / max(high - low, 1e-3), 0, 1)
        two_tone = ((stretched > 0.8) | (stretched < 0.2)).mean()  # paper and ink, few mid-tones
        saturation = (rgb.max(axis=2) - rgb.min(axis=2)).mean()
        return np.array([np.tanh(-skew / 2), 2 * flat - 1, 2 * two_tone - 1, 1 - 6 * saturation])


class HFImageEncoder:
    """The image tower of a CLIP/SigLIP model (its text tower is not loaded)."""

    def __init__(self, model: ModelRef, allow_hub: bool = False):
        self.clip = DualEncoder(model, allow_hub, text=False)
        self.name = self.clip.name
        self.input_side = self.clip.input_side

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return self.clip.image_features(images)
