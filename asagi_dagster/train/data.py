"""Mixture examples in a fixed, resumable order, tokenized with the Asagi template and
batched by padding or by padding-free packing.

The order is a function of (seed, epoch) only: row groups shuffled, then rows within
each group. So "where training is" is one number, the count of examples consumed, and
a resumed run reads exactly what an uninterrupted one would have. Row-group blocks keep
reads sequential on object storage, as WebDataset's shard shuffle does.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from asagi_dagster.storage import Storage, StorageSettings
from asagi_dagster.train.template import training_text

IGNORE = -100  # label of a token the loss skips (prompt, image, padding)


class MixtureReader:
    """Random access to a mixture's rows through its row groups (one group cached)."""

    COLUMNS = ["example_id", "instruction", "response", "bytes"]

    def __init__(self, fs, path: str):
        self._file = pq.ParquetFile(fs.open(path, "rb"))
        meta = self._file.metadata
        self.group_sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_starts = np.cumsum([0] + self.group_sizes)[:-1]
        self.rows = int(sum(self.group_sizes))
        self._cached: tuple[int, list[dict]] | None = None

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """Row indices of one epoch: groups in a seeded order, rows shuffled within each."""
        rng = np.random.default_rng([seed, epoch])
        blocks = []
        for group in rng.permutation(len(self.group_sizes)):
            blocks.append(self.group_starts[group] + rng.permutation(self.group_sizes[group]))
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)

    def row(self, index: int) -> dict:
        group = int(np.searchsorted(self.group_starts, index, side="right") - 1)
        if self._cached is None or self._cached[0] != group:
            self._cached = (group, self._file.read_row_group(group, columns=self.COLUMNS).to_pylist())
        return self._cached[1][index - int(self.group_starts[group])]


class ExampleStream:
    """Examples by global position: position p is row ``order(seed, p // rows)[p % rows]``."""

    def __init__(self, reader: MixtureReader, seed: int):
        if reader.rows == 0:
            raise ValueError("the mixture has no examples: nothing to train on")
        self.reader = reader
        self.seed = seed
        self._epoch: tuple[int, np.ndarray] | None = None

    def at(self, position: int) -> dict:
        epoch, offset = divmod(position, self.reader.rows)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self.reader.order(self.seed, epoch))
        return self.reader.row(int(self._epoch[1][offset]))


def micro_batch_positions(step_start: int, global_batch: int, micro_batch: int, world: int, rank: int) -> list[list[int]]:
    """The global positions each of this rank's micro batches holds in one optimizer step.

    Micro batch m of rank r takes block m * world + r: every position of the step is
    used exactly once, whatever the world size."""
    per_block = micro_batch
    blocks = global_batch // per_block
    return [list(range(step_start + b * per_block, step_start + (b + 1) * per_block)) for b in range(rank, blocks, world)]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image: Image.Image


class Encoder:
    """Tokenizes one example as the processor would at inference (special tokens
    included) with the image token expanded to one token per image feature."""

    def __init__(self, processor, image_tokens: int, max_text_tokens: int):
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.image_tokens = image_tokens
        self.max_text_tokens = max_text_tokens
        size = getattr(self.image_processor, "size", None) or {}
        self.image_size = (size.get("width", 0), size.get("height", 0)) if "height" in size else None

    def encode(self, example: dict) -> Encoded:
        prompt, target = training_text(example["instruction"], example["response"], self.tokenizer.eos_token)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        text = (prompt_ids + target_ids)[: self.max_text_tokens]  # cuts the answer, never the image token
        labels = [IGNORE] * len(prompt_ids) + target_ids
        labels = labels[: len(text)]
        at = text.index(self.image_token_id)
        input_ids = text[:at] + [self.image_token_id] * self.image_tokens + text[at + 1 :]
        labels = labels[:at] + [IGNORE] * self.image_tokens + labels[at + 1 :]
        return Encoded(input_ids, labels, self.decode(example["bytes"]))

    def decode(self, data: bytes) -> Image.Image:
        """The image in RGB. A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that is
        still at least the vision tower's input size (draft mode): a web photo decodes
        several times faster, and the processor resizes it to that size anyway."""
        image = Image.open(io.BytesIO(data))
        if self.image_size:
            image.draft("RGB", self.image_size)  # a no-op for formats other than JPEG
        return image.convert("RGB")

    def pixel_values(self, images: list[Image.Image]):
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


class StepBatches:
    """One process's micro batches for each optimizer step, as a map-style dataset: item i
    is step ``first_step + i``. A DataLoader builds them in worker processes (decode,
    preprocess, tokenize, pack or pad) while the training step runs, and in order, so a
    resumed run reads exactly what an uninterrupted one would have.

    Each item: ``batches`` (the micro batches), ``lengths`` (tokens per example) and
    ``trained_tokens`` (this process's, counted on the host)."""

    def __init__(
        self,
        storage: StorageSettings,
        mixture_path: str,
        seed: int,
        encoder: Encoder,
        pad_id: int,
        packing: bool,
        global_batch: int,
        micro_batch: int,
        world: int,
        rank: int,
        first_position: int,
        steps: int,
    ):
        self.storage, self.mixture_path, self.seed = storage, mixture_path, seed
        self.encoder, self.pad_id, self.packing = encoder, pad_id, packing
        self.global_batch, self.micro_batch, self.world, self.rank = global_batch, micro_batch, world, rank
        self.first_position, self.steps = first_position, steps
        self._stream: tuple[int, ExampleStream] | None = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict:
        stream = self.stream()
        position = self.first_position + index * self.global_batch
        batches, examples = [], []
        for positions in micro_batch_positions(position, self.global_batch, self.micro_batch, self.world, self.rank):
            encoded = [self.encoder.encode(stream.at(p)) for p in positions]
            batches.append(packed_batch(encoded, self.encoder) if self.packing else padded_batch(encoded, self.encoder, self.pad_id))
            examples += encoded
        return {"batches": batches, "lengths": [len(e.input_ids) for e in examples], "trained_tokens": trained_tokens(examples)}

    def stream(self) -> ExampleStream:
        """The mixture, opened by the process that reads it: a worker must not share the
        parent's file handle (forked workers reading one file offset would mix rows) nor
        its S3 client (s3fs is not fork-safe)."""
        if self._stream is None or self._stream[0] != os.getpid():
            fs = Storage(self.storage).fs
            self._stream = (os.getpid(), ExampleStream(MixtureReader(fs, self.mixture_path), self.seed))
        return self._stream[1]

    def __getstate__(self) -> dict:  # spawned workers: everything but the open file
        return {**self.__dict__, "_stream": None}


def step_loader(dataset: StepBatches, workers: int, pin_memory: bool):
    """Steps in order, built ``workers`` processes ahead of the training step (0: in this
    process, one at a time), in pinned memory for an asynchronous copy to the GPU."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset (__getitem__, __len__) without torch's base class
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def padded_batch(examples: list[Encoded], encoder: Encoder, pad_id: int) -> dict:
    """Rows padded on the right to the longest, with an attention mask."""
    import torch

    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": encoder.pixel_values([e.image for e in examples])}


def packed_batch(examples: list[Encoded], encoder: Encoder) -> dict:
    """One row of all examples back to back, position ids restarting at each: no
    padding. Attention stays within each example only because the model sees no
    attention mask and no cache (transformers then reads the boundaries from the
    position ids)."""
    import torch

    ids = [t for e in examples for t in e.input_ids]
    labels = [t for e in examples for t in e.labels]
    positions = [p for e in examples for p in range(len(e.input_ids))]
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        "pixel_values": encoder.pixel_values([e.image for e in examples]),
    }


def trained_tokens(examples: list[Encoded]) -> int:
    """Tokens the loss of a batch of ``examples`` covers, counted on the host from the
    labels (padded or packed alike: an example's first label is its prompt's, never
    trained), so the step never waits on the device for it."""
    return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in examples)


def token_loss_sum(model, batch: dict):
    """The sum of next-token losses over the batch's trained tokens, on the device."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    targets = batch["labels"][:, 1:].to(logits.device)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
