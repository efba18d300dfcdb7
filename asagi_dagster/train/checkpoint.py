"""Resumable training checkpoints on the storage root (local or s3), and the Hugging
Face export.

A checkpoint is a folder ``step-NNNNNNNN`` written by torch.distributed.checkpoint
(each rank writes its own shards of model and optimizer, resharded on load) plus one
small file per rank with the trainer's extras: RNG states and data position.
It counts only once ``latest.json`` names it, written by rank 0 after every rank has
finished, so a run killed mid-write resumes from the previous one.

Whoever can write to the storage root must not be able to run code in the training
ranks, so nothing read back is unpickled freely: the extras are a safetensors file
whose metadata holds them as JSON, DCP's pickled ``.metadata`` goes through an
unpickler that knows only DCP's own classes, and its non-tensor items load with
``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from asagi_dagster.storage import Storage

LATEST = "latest.json"
KEEP = 2  # checkpoints kept: the newest and one before it


class CheckpointError(RuntimeError):
    """A checkpoint that is refused: unsafe to load, or not in the form this version writes."""


class TrainingCheckpoints:
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
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter
        from torch.distributed.checkpoint.state_dict import get_state_dict

        folder = self._step_folder(step)
        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, storage_writer=FsspecWriter(self.storage.url(folder), **self.storage.options))
        self.storage.write_bytes(self._extras_path(folder), encode_extras(extra))
        dist.barrier()
        if self.rank == 0:
            self.storage.write_json(f"{self.folder}/{LATEST}", {"step": step, "world": self.world})
            self._prune(step)
        dist.barrier()

    def load(self, step: int, model, optimizer) -> dict:
        """Restore model and optimizer in place and return the extras; raises
        CheckpointError for a checkpoint that would run code or is not ours."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        folder = self._step_folder(step)
        extras = self._read_extras(folder)  # first: it is small, and a refusal should not wait for the weights
        try:
            metadata = _read_dcp_metadata(self.storage, folder)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {folder}: {exc}") from None
        model_state, optim_state = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_state, "optim": optim_state}
        try:
            dcp.load(state, storage_reader=_reader_of(metadata, self.storage.url(folder), self.storage.options), planner=_safe_planner())
        except CheckpointException as exc:  # DCP gathers each rank's failure; ours say what was refused
            refused = [error for error, _trace in exc.failures.values() if isinstance(error, CheckpointError)]
            if refused:
                raise CheckpointError(f"checkpoint {folder}: {refused[0]}") from None
            raise
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return extras

    def _read_extras(self, folder: str) -> dict:
        path = self._extras_path(folder)
        if not self.storage.exists(path):
            if self.storage.exists(f"{folder}/extra-rank{self.rank}.pt"):
                raise CheckpointError(
                    f"checkpoint {folder} keeps its extras as a pickle (extra-rank{self.rank}.pt, from an earlier version); "
                    f"unpickling can run code, so it is not loaded. Remove {self.folder} to start the stage over"
                )
            raise CheckpointError(f"checkpoint {folder} has no {path.rsplit('/', 1)[1]}")
        with self.storage.fs.open(path, "rb") as f:
            return decode_extras(f.read(), path)

    def _step_folder(self, step: int) -> str:
        return f"{self.folder}/step-{step:08d}"

    def _extras_path(self, folder: str) -> str:
        return f"{folder}/extra-rank{self.rank}.safetensors"

    def _prune(self, newest: int) -> None:
        steps = sorted(
            int(name.rsplit("-", 1)[1])
            for name in (p.rstrip("/").rsplit("/", 1)[-1] for p in self.storage.fs.ls(self.folder, detail=False))
            if name.startswith("step-")
        )
        for step in steps:
            if step < newest and step not in steps[-KEEP:]:
                self.storage.fs.rm(self._step_folder(step), recursive=True)


# --- extras: JSON for the plain data, safetensors for the arrays -----------------------
# JSON has no tuples and no arrays, so those become one-key objects; a "$" key is ours.
_TENSOR, _ARRAY, _TUPLE = "$tensor", "$ndarray", "$tuple"


def encode_extras(extras: dict) -> bytes:
    """Plain data (dict with str keys, list, tuple, str, int, float, bool, None), torch
    tensors and numpy arrays, as one safetensors file; anything else is a TypeError."""
    import numpy as np
    import torch
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, tag: str) -> dict:
        name = f"t{len(tensors)}"
        tensors[name] = tensor.detach().cpu().contiguous().clone()  # safetensors refuses shared memory
        return {tag: name}

    def encode(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return keep(value, _TENSOR)
        if isinstance(value, np.ndarray):
            return keep(torch.from_numpy(np.array(value, copy=True)), _ARRAY)
        if isinstance(value, tuple):
            return {_TUPLE: [encode(v) for v in value]}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str) or k.startswith("$")]
            if bad:
                raise TypeError(f"checkpoint extras: dict keys must be strings not starting with '$', not {bad[0]!r}")
            return {k: encode(v) for k, v in value.items()}
        raise TypeError(f"checkpoint extras hold plain data, tensors and numpy arrays, not {type(value).__name__}")

    tree = encode(extras)
    return save(tensors, metadata={"extras": json.dumps(tree)})


def decode_extras(data: bytes, where: str) -> dict:
    """The inverse of encode_extras; raises CheckpointError for anything else (a pickle
    included), without running it."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        tree = json.loads(header["__metadata__"]["extras"])
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON and key errors alike: not our file
        raise CheckpointError(f"{where} is not a safetensors extras file ({type(exc).__name__}: {str(exc)[:200]}); not loaded") from None

    def decode(value):
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1 and _TUPLE in value:
            return tuple(decode(v) for v in value[_TUPLE])
        if len(value) == 1 and _TENSOR in value:
            return tensors[value[_TENSOR]]
        if len(value) == 1 and _ARRAY in value:
            return tensors[value[_ARRAY]].numpy()
        return {k: decode(v) for k, v in value.items()}

    try:
        return decode(tree)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: extras name a tensor it does not hold ({exc})") from None


# --- DCP, read without running code ---------------------------------------------------
# What DCP's .metadata pickle may name (torch 2.13; dtypes and layouts are checked by type).
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # looks a name up among torch's layouts
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import torch

        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):  # vars: no lazy imports by name
            return vars(torch)[name]
        if (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        raise CheckpointError(f".metadata names {module}.{name}, which DCP metadata never holds; not loaded")


def _read_dcp_metadata(storage: Storage, folder: str):
    """DCP's global .metadata through the restricted unpickler; CheckpointError otherwise."""
    with storage.fs.open(f"{folder}/.metadata", "rb") as stream:
        try:
            return _MetadataUnpickler(stream).load()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or garbled pickles raise many types
            raise CheckpointError(f"unreadable .metadata ({type(exc).__name__}: {str(exc)[:200]})") from None


def _reader_of(metadata, url: str, options: dict):
    """DCP's fsspec reader, handed the metadata already read safely (DCP would pickle.load it,
    and turns errors of read_metadata into a fallback, not a refusal)."""
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class PreReadReader(FsspecReader):
        def read_metadata(self, *args, **kwargs):
            if getattr(metadata, "storage_meta", None) is None:  # as FileSystemReader.read_metadata does
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return PreReadReader(url, **options)


def _safe_planner():
    import torch
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            # DefaultLoadPlanner.load_bytes with weights_only=True: these are floats, tuples, names.
            fqn = read_item.dest_index.fqn
            try:
                obj = torch.load(value, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - the restricted unpickler's refusals and broken data
                raise CheckpointError(f"item {fqn} is not plain data ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    return SafePlanner()


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
            return "vision_tower.vision_model." + key[len("vision_tower.") :]
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
