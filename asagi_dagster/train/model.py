"""The Asagi architecture from transformers' stock classes: a SigLIP vision tower, a
2-layer GELU projector and a Llama-architecture LLM in ``LlavaForConditionalGeneration``,
so the result loads in transformers and vLLM without custom code.

Stage 1 starts from the two pretrained towers and a fresh projector; stage 2 starts
from stage 1's saved model. The processor (SigLIP image processor + the LLM's
tokenizer with the image token) and the Asagi chat template are saved with the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asagi_dagster.models.settings import ModelRef
from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA, BUILTIN_TINY_SIGLIP, builtin_folder
from asagi_dagster.train.template import IMAGE_TOKEN, TRAINING_CHAT_TEMPLATE

# Which parameters each stage trains (Asagi: the vision tower is always frozen).
TRAINED_MODULES = {
    "stage1": ("multi_modal_projector",),
    "stage2": ("multi_modal_projector", "language_model", "lm_head"),
}


def model_source(ref: ModelRef) -> tuple[str, str | None]:
    """(folder or hub id, revision) of a profile model, building a builtin tiny one here."""
    if ref.id.startswith("builtin:"):
        return str(builtin_folder(ref.id, (BUILTIN_TINY_SIGLIP, BUILTIN_TINY_LLAMA))), None
    return ref.id, ref.revision


def build_stage1_start(vision: ModelRef, llm: ModelRef, allow_hub: bool, seed: int):
    """(model, processor): pretrained SigLIP tower and LLM, a projector drawn from ``seed``.

    The Llava shell is built on the meta device and given the loaded towers as its
    modules, so a 13B LLM is never initialised randomly first."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    vision_id, vision_rev = model_source(vision)
    llm_id, llm_rev = model_source(llm)
    # A revision of None is transformers' default (it types the argument as str).
    vision_load: dict[str, Any] = {"revision": vision_rev, "local_files_only": not allow_hub}
    llm_load: dict[str, Any] = {"revision": llm_rev, "local_files_only": not allow_hub}
    # Features come from layer -2, so SigLIP's pooling head would be dead weight.
    tower_config = SiglipVisionConfig.from_pretrained(vision_id, **vision_load)
    tower_config.vision_use_head = False
    tower = SiglipVisionModel.from_pretrained(vision_id, config=tower_config, **vision_load)
    language = LlamaForCausalLM.from_pretrained(llm_id, **llm_load)
    tokenizer = AutoTokenizer.from_pretrained(llm_id, **llm_load)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = TRAINING_CHAT_TEMPLATE
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert isinstance(image_token_index, int)  # one token, one id
    config = LlavaConfig(
        vision_config=tower.config,
        text_config=language.config,
        image_token_index=image_token_index,
        vision_feature_select_strategy="full",  # "default" drops a real SigLIP patch (SigLIP has no CLS)
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = language.model
    model.lm_head = language.lm_head
    projector = model.model.multi_modal_projector.to_empty(device="cpu")
    torch.manual_seed(seed)
    for layer in (projector.linear_1, projector.linear_2):
        layer.reset_parameters()
    if len(tokenizer) > model.config.text_config.vocab_size:  # type: ignore[union-attr]  # never shrink: LLMs pad their vocabulary on purpose
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    images = SiglipImageProcessor.from_pretrained(vision_id, **vision_load)
    patch_size = tower.config.patch_size
    assert isinstance(patch_size, int)  # SigLIP's patches are square
    return model, _processor(images, tokenizer, patch_size)


def load_vlm(folder: str | Path):
    """(model, processor) from a folder ``checkpoint.export_model`` wrote: where stage 2
    starts from stage 1."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def _processor(images, tokenizer, patch_size: int):
    from transformers import LlavaProcessor

    side = images.size["height"]
    images.crop_size = {"height": side, "width": side}  # LlavaProcessor counts image tokens from it
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token=IMAGE_TOKEN,
        chat_template=TRAINING_CHAT_TEMPLATE,
    )


def image_token_count(config) -> int:
    """Image tokens per image for the "full" strategy: one per patch."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def set_trainable(model, stage: str) -> list:
    """Freeze all but the stage's modules; returns the trained parameters."""
    trained = TRAINED_MODULES[stage]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(f"{module}." in f".{name}" for module in trained))
    return [p for p in model.parameters() if p.requires_grad]
