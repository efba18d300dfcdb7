"""TrainingCheckpoints on the storage root resume exactly and never run code found there: a
pickle planted in the extras, in DCP's .metadata or in one of DCP's byte items is
refused with a message, and the code in it never runs."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from asagi_dagster.train.checkpoint import CheckpointError, TrainingCheckpoints, decode_extras, encode_extras
from asagi_dagster.train.trainer import _get_rng, _set_rng


class TouchOnLoad:
    """Unpickling this creates ``marker``: what a planted pickle could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/process-group", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def trained_model(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(3, 6)).sum().backward()
    optimizer.step()
    return model, optimizer


@pytest.fixture
def saved(storage, process_group):
    """A committed step-1 checkpoint, the extras the trainer stores, and what the RNGs give next."""
    checkpoints = TrainingCheckpoints(storage, storage.path("_work", "ckpt"), rank=0, world=1)
    model, optimizer = trained_model(seed=0)
    extras = {"rng": _get_rng(), "data_position": 12}
    checkpoints.save(1, model, optimizer, extras)
    next_draws = (random.random(), np.random.random(), torch.rand(3))
    return checkpoints, model, optimizer, extras, next_draws


def step_folder(checkpoints: TrainingCheckpoints, step: int = 1) -> Path:
    return Path(checkpoints.folder) / f"step-{step:08d}"


def test_a_resumed_checkpoint_restores_weights_optimizer_rngs_and_position(saved):
    checkpoints, model, optimizer, extras, next_draws = saved
    assert checkpoints.latest() == 1
    fresh_model, fresh_optimizer = trained_model(seed=1)
    loaded = checkpoints.load(1, fresh_model, fresh_optimizer)

    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor), name
    want, got = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert got["param_groups"] == want["param_groups"]
    for index, state in want["state"].items():
        for key, value in state.items():
            assert torch.equal(got["state"][index][key], value), (index, key)

    assert loaded["data_position"] == 12
    python, numpy_state = loaded["rng"]["python"], loaded["rng"]["numpy"]
    assert python == extras["rng"]["python"] and isinstance(python, tuple) and isinstance(python[1], tuple)
    assert numpy_state[1].dtype == np.uint32 and np.array_equal(numpy_state[1], extras["rng"]["numpy"][1])
    _set_rng(loaded["rng"])
    python_draw, numpy_draw, torch_draw = next_draws
    assert random.random() == python_draw and np.random.random() == numpy_draw
    assert torch.equal(torch.rand(3), torch_draw)


def test_extras_round_trip_plain_data_tensors_and_arrays_and_refuse_other_objects():
    extras = {"a": (1, 2.5, None, True, "x"), "b": [float("inf"), 2**70], "t": torch.arange(4, dtype=torch.bfloat16), "n": np.arange(3, dtype=np.int16)}
    back = decode_extras(encode_extras(extras), "here")
    assert back["a"] == extras["a"] and isinstance(back["a"], tuple)
    assert back["b"] == extras["b"] and torch.equal(back["t"], extras["t"]) and back["n"].dtype == np.int16
    with pytest.raises(TypeError, match="not PosixPath"):
        encode_extras({"where": Path("/tmp")})
    with pytest.raises(TypeError, match="not starting with"):
        encode_extras({"$tensor": "t0"})


def test_a_pickle_planted_as_the_extras_is_refused_and_never_runs(saved, tmp_path):
    checkpoints = saved[0]
    marker = tmp_path / "ran"
    (step_folder(checkpoints) / "extra-rank0.safetensors").write_bytes(pickle.dumps({"rng": TouchOnLoad(marker)}))
    model, optimizer = trained_model(seed=1)
    with pytest.raises(CheckpointError, match="extra-rank0.safetensors is not a safetensors extras file"):
        checkpoints.load(1, model, optimizer)
    assert not marker.exists()


def test_extras_pickled_by_an_earlier_version_are_refused_with_what_to_do(saved, tmp_path):
    checkpoints = saved[0]
    marker = tmp_path / "ran"
    folder = step_folder(checkpoints)
    (folder / "extra-rank0.safetensors").unlink()
    buffer = io.BytesIO()
    torch.save({"rng": TouchOnLoad(marker)}, buffer)
    (folder / "extra-rank0.pt").write_bytes(buffer.getvalue())
    model, optimizer = trained_model(seed=1)
    with pytest.raises(CheckpointError, match=r"keeps its extras as a pickle .* Remove .*ckpt to start the stage over"):
        checkpoints.load(1, model, optimizer)
    assert not marker.exists()


def test_a_pickle_planted_as_dcp_metadata_is_refused_and_never_runs(saved, tmp_path):
    checkpoints = saved[0]
    marker = tmp_path / "ran"
    (step_folder(checkpoints) / ".metadata").write_bytes(pickle.dumps(TouchOnLoad(marker)))
    model, optimizer = trained_model(seed=1)
    with pytest.raises(CheckpointError, match=r"\.metadata names pathlib\.Path\.touch, which DCP metadata never holds"):
        checkpoints.load(1, model, optimizer)
    assert not marker.exists()


def test_a_pickle_planted_as_a_dcp_byte_item_is_refused_and_never_runs(saved, tmp_path):
    """The attacker appends a torch.save'd payload to the data file and points the
    optimizer's lr item at it in a .metadata made only of DCP's own classes."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    checkpoints = saved[0]
    marker = tmp_path / "ran"
    folder = step_folder(checkpoints)
    metadata = pickle.loads((folder / ".metadata").read_bytes())  # our own file: trusted here
    index = next(i for i in metadata.storage_data if i.fqn.endswith("param_groups.0.lr"))
    info = metadata.storage_data[index]
    payload = io.BytesIO()
    torch.save(TouchOnLoad(marker), payload)
    data_file = folder / info.relative_path
    offset = data_file.stat().st_size
    with data_file.open("ab") as f:
        f.write(payload.getvalue())
    metadata.storage_data[index] = _StorageInfo(info.relative_path, offset, len(payload.getvalue()))
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))

    model, optimizer = trained_model(seed=1)
    with pytest.raises(CheckpointError, match=r"item optim\.param_groups\.0\.lr is not plain data"):
        checkpoints.load(1, model, optimizer)
    assert not marker.exists()
