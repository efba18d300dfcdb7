"""Model FLOPs of a LLaVA training step, and the device's measured matmul peak, for MFU.

Counted on real tokens only (padding is waste, so it lowers MFU) and without the
recomputation of gradient checkpointing (that is HFU, not MFU). A frozen module that
gradients pass through (the LLM in stage 1) costs one backward (input gradients), a
trained one two (input and weight gradients), the vision tower none (nothing before it
is trained).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FlopModel:
    llm_params: int  # matmul parameters: layers and the output head, not the embedding table
    llm_layers: int
    llm_hidden: int
    vision_params: int
    vision_layers: int
    vision_hidden: int
    patches: int
    projector_params: int
    llm_trained: bool

    @classmethod
    def of(cls, model, image_tokens: int, llm_trained: bool) -> FlopModel:
        text = model.config.text_config
        vision = model.config.vision_config
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        language = model.model.language_model
        return cls(
            llm_params=count(language) - language.embed_tokens.weight.numel() + model.lm_head.weight.numel(),
            llm_layers=text.num_hidden_layers,
            llm_hidden=text.hidden_size,
            vision_params=count(model.model.vision_tower),
            vision_layers=vision.num_hidden_layers,
            vision_hidden=vision.hidden_size,
            patches=image_tokens,
            projector_params=count(model.model.multi_modal_projector),
            llm_trained=llm_trained,
        )

    def step_flops(self, sequence_lengths: list[int], images: int) -> float:
        """FLOPs of forward and backward over sequences of these lengths holding ``images`` images."""
        tokens = sum(sequence_lengths)
        # Causal attention: QK^T and AV are 2*s*s*d each per layer, half of it masked.
        llm_forward = 2 * self.llm_params * tokens + 2 * self.llm_layers * self.llm_hidden * sum(s * s for s in sequence_lengths)
        llm = llm_forward * (3 if self.llm_trained else 2)
        vision = images * (2 * self.vision_params * self.patches + 4 * self.vision_layers * self.vision_hidden * self.patches**2)
        projector = 6 * self.projector_params * images * self.patches
        return float(llm + vision + projector)


def measured_peak_flops(device, dtype, seconds: float = 1.0) -> float:
    """The best dense matmul rate this device reaches in ``dtype`` (FLOP/s): the roof
    MFU is measured against, taken on the machine rather than from a datasheet."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: kernels chosen, clocks up
        a @ b
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        sync()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - start))
    return best
