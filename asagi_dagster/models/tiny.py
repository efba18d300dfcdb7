"""Tiny models built on this machine for the embedded default and the tests: random
weights (seeded), a tokenizer trained on the spot on text the project ships, saved in
Hugging Face format so the same loading code as the cluster's real models runs.

They decide nothing well (the weights are random); they make every code path that a
real model takes run offline, in seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

BUILTIN_TINY_CLIP = "builtin:tiny-clip-ja"
BUILTIN_TINY_LLAMA = "builtin:tiny-llama-ja"  # a chat LLM (text in, text out)
BUILTIN_TINY_LLAVA = "builtin:tiny-llava-ja"  # a LLaVA VLM (SigLIP + projector + Llama)
BUILTIN_TINY_SIGLIP = "builtin:tiny-siglip"  # a SigLIP vision tower, where training starts
# Bump a recipe's version when it changes: cached builds are keyed by it.
TINY_CLIP_VERSION = "1"
TINY_CHAT_VERSION = "2"  # 2: the tokenizer also learns the training template
TINY_SIGLIP_VERSION = "1"

# Roles as special tokens; content is either a string or a list of parts (an image part
# becomes the image token). Written on one line because the template renderer trims
# the newline after each block tag.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ '</s>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def model_cache() -> Path:
    return Path(os.environ.get("ASAGI_MODEL_CACHE") or Path.home() / ".cache" / "asagi" / "models")


def tiny_clip(corpus: list[str]) -> Path:
    """The folder of the tiny Japanese CLIP, built once per recipe version."""
    return _built_once(f"tiny-clip-ja-v{TINY_CLIP_VERSION}", lambda folder: build_tiny_clip(folder, corpus))


def tiny_llama(corpus: list[str]) -> Path:
    return _built_once(f"tiny-llama-ja-v{TINY_CHAT_VERSION}", lambda folder: build_tiny_llama(folder, corpus))


def tiny_llava(corpus: list[str]) -> Path:
    return _built_once(f"tiny-llava-ja-v{TINY_CHAT_VERSION}", lambda folder: build_tiny_llava(folder, corpus))


def tiny_siglip() -> Path:
    return _built_once(f"tiny-siglip-v{TINY_SIGLIP_VERSION}", build_tiny_siglip)


def _built_once(name: str, build) -> Path:
    """``model_cache()/name``, built by ``build(folder)`` in a staging folder and renamed
    into place, so a reader never sees half a model."""
    folder = model_cache() / name
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        build(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first; its build is the same
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_clip(folder: Path, corpus: list[str], seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, min_frequency=1, show_progress=False))
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    # CLIP's text tower pools at the end-of-text token, so every sequence must end with one.
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=64)
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **tiny,
            "vocab_size": len(fast),
            "max_position_embeddings": 64,
            "pad_token_id": fast.pad_token_id,
            "bos_token_id": bos,
            "eos_token_id": eos,
        },
        vision_config={**tiny, "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)


def _tiny_siglip_config():
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def build_tiny_siglip(folder: Path, seed: int = 0) -> None:
    """A SigLIP vision tower (16 patches of a 32 px image) and its image processor."""
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionModel

    torch.manual_seed(seed)
    SiglipVisionModel(_tiny_siglip_config()).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def chat_tokenizer(corpus: list[str]):
    """A BPE tokenizer trained on ``corpus`` with chat roles and an image token, and a
    decoder so generated ids read back as text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<image>"]
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, min_frequency=1, show_progress=False))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _tiny_llama_config(tokenizer):
    from transformers import LlamaConfig

    # head_dim 64: the smallest vLLM's CPU attention accepts.
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llama(folder: Path, corpus: list[str], seed: int = 0) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(corpus)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_tiny_llama_config(tokenizer))
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_tiny_llava(folder: Path, corpus: list[str], seed: int = 0) -> None:
    """The Asagi architecture in miniature: SigLIP tower, 2-layer GELU projector, Llama."""
    import torch
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipImageProcessor

    tokenizer = chat_tokenizer(corpus)
    config = LlavaConfig(
        vision_config=_tiny_siglip_config(),
        text_config=_tiny_llama_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    images = SiglipImageProcessor(size={"height": 32, "width": 32})
    images.crop_size = {"height": 32, "width": 32}  # type: ignore[attr-defined]  # LlavaProcessor counts image tokens from it
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="full",
        chat_template=TINY_CHAT_TEMPLATE,
        num_additional_image_tokens=0,
    )
    processor.save_pretrained(folder)


def builtin_folder(model_id: str, usable: tuple[str, ...]) -> Path:
    """The one place a ``builtin:`` id becomes a folder: the tiny model, built on first
    use from the text it is trained on (models/corpus.py). ``usable``: the ids the
    asking role can load; any other is a clear error naming them."""
    from asagi_dagster.models.corpus import page_texts, tokenizer_corpus
    from asagi_dagster.settings import ConfigError

    builders = {
        BUILTIN_TINY_CLIP: lambda: tiny_clip(page_texts()),
        BUILTIN_TINY_LLAMA: lambda: tiny_llama(tokenizer_corpus()),
        BUILTIN_TINY_LLAVA: lambda: tiny_llava(tokenizer_corpus()),
        BUILTIN_TINY_SIGLIP: tiny_siglip,
    }
    if model_id not in usable or model_id not in builders:
        raise ConfigError(f"unknown builtin model {model_id!r} here (known: {', '.join(usable)})")
    return builders[model_id]()
