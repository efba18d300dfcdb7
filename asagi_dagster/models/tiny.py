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
TINY_CLIP_VERSION = "1"  # bump when the recipe changes: cached builds are keyed by it


def model_cache() -> Path:
    return Path(os.environ.get("ASAGI_MODEL_CACHE") or Path.home() / ".cache" / "asagi" / "models")


def tiny_clip(corpus: list[str]) -> Path:
    """The folder of the tiny Japanese CLIP, built once per recipe version (atomically)."""
    folder = model_cache() / f"tiny-clip-ja-v{TINY_CLIP_VERSION}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-clip-", dir=folder.parent))
    try:
        build_tiny_clip(staging, corpus)
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
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, min_frequency=1))
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    # CLIP's text tower pools at the end-of-text token, so every sequence must end with one.
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=64
    )
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tiny, "vocab_size": len(fast), "max_position_embeddings": 64, "pad_token_id": fast.pad_token_id,
                     "bos_token_id": bos, "eos_token_id": eos},
        vision_config={**tiny, "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
