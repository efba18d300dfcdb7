"""Resumable training checkpoints on the storage root (local or s3), and the Hugging
Face export.

A checkpoint is a folder ``step-NNNNNNNN`` written by torch.distributed.checkpoint
(each rank writes its own shards of model and optimizer, resharded on load) plus one
small file per rank with what is not a tensor: scheduler, RNG states, data position.
It counts only once ``latest.json`` names it, written by rank 0 after every rank has
finished, so a run killed mid-write resumes from the previous one.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

from asagi_dagster.storage import Storage

LATEST = "latest.json"
KEEP = 2  # checkpoints kept: the newest and one before it


class Checkpoints:
    def __init__(self, storage: Storage, folder: str, rank: int, world: int):
        self.storage = storage
        self.folder = folder.rstrip("/")
        self.rank = rank
        self.world = world

    def latest(self) -> int | None:
        path = f"{self.folder}/{LATEST}"
        if not self.storage.exists(path):
            return None
        state = self.storage.read_json(path)
        if state["world"] != self.world:
            raise RuntimeError(
                f"checkpoint {self.folder} was written by {state['world']} processes, this run has {self.world}: "
                "the data order per process would differ, so it cannot resume exactly"
            )
        return int(state["step"])

    def save(self, step: int, model, optimizer, extra: dict) -> None:
        import torch
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter
        from torch.distributed.checkpoint.state_dict import get_state_dict

        folder = self._step_folder(step)
        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, storage_writer=FsspecWriter(self.storage.url(folder), **self.storage.options))
        buffer = io.BytesIO()
        torch.save(extra, buffer)
        self.storage.write_bytes(f"{folder}/extra-rank{self.rank}.pt", buffer.getvalue())
        dist.barrier()
        if self.rank == 0:
            self.storage.write_json(f"{self.folder}/{LATEST}", {"step": step, "world": self.world})
            self._prune(step)
        dist.barrier()

    def load(self, step: int, model, optimizer) -> dict:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        folder = self._step_folder(step)
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, storage_reader=FsspecReader(self.storage.url(folder), **self.storage.options))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        with self.storage.fs.open(f"{folder}/extra-rank{self.rank}.pt", "rb") as f:
            return torch.load(io.BytesIO(f.read()), weights_only=False)

    def _step_folder(self, step: int) -> str:
        return f"{self.folder}/step-{step:08d}"

    def _prune(self, newest: int) -> None:
        steps = sorted(
            int(name.rsplit("-", 1)[1]) for name in (p.rstrip("/").rsplit("/", 1)[-1] for p in self.storage.fs.ls(self.folder, detail=False))
            if name.startswith("step-")
        )
        for step in steps:
            if step < newest and step not in steps[-KEEP:]:
                self.storage.fs.rm(self._step_folder(step), recursive=True)


def export_model(storage: Storage, model, processor, dest: str, dtype: str) -> None:
    """Gather the full model (a collective: every rank calls it) and, on rank 0, save it
    in Hugging Face format at ``dest``: a staging folder renamed into place locally,
    files then the config last on s3 (the asset's manifest, written after, is what
    makes it visible)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import LlavaForConditionalGeneration

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        with torch.device("meta"):
            plain = LlavaForConditionalGeneration(model.config)
        plain.load_state_dict(state, assign=True)
        plain.tie_weights()
        plain.generation_config = model.generation_config
        plain = plain.to(getattr(torch, dtype))
        staging = Path(tempfile.mkdtemp(prefix="asagi-export-"))
        try:
            plain.save_pretrained(staging)
            processor.save_pretrained(staging)
            vllm_vision_names(staging)
            _publish(storage, staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    dist.barrier()


def vllm_vision_names(folder: Path) -> None:
    """Name the vision tower's tensors ``vision_tower.vision_model.*``, as vLLM's Llava
    loader expects; transformers 5 saves them without ``vision_model.`` and loads either
    form. Rewrites each safetensors file (and the shard index) in place."""
    import json

    from safetensors.torch import load_file, save_file

    def rename(key: str) -> str:
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            return "vision_tower.vision_model." + key[len("vision_tower."):]
        return key

    for file in sorted(folder.glob("*.safetensors")):
        tensors = load_file(file)
        if any(rename(k) != k for k in tensors):
            save_file({rename(k): v for k, v in tensors.items()}, file, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))


def _publish(storage: Storage, staging: Path, dest: str) -> None:
    if storage.is_local:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=Path(dest).parent))
        shutil.rmtree(incoming)
        shutil.copytree(staging, incoming)
        if os.path.exists(dest):
            retired = f"{dest}.old-{os.getpid()}"
            os.replace(dest, retired)
            os.replace(incoming, dest)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(incoming, dest)
        return
    if storage.fs.exists(dest):
        storage.fs.rm(dest, recursive=True)
    files = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")  # config last: a loader needs it first
    for file in files:
        storage.fs.put_file(str(file), f"{dest}/{file.name}")
