"""Batching and order: packing gives the padded batch's loss (examples do not see each
other), and the example order is a pure function of seed and position."""

import pytest
import torch

from asagi_dagster.train import data
from asagi_dagster.train.model import image_token_count
from tests.train.helpers import example, start_model, write_mixture


@pytest.fixture(scope="module")
def tiny():
    model, processor = start_model()
    model.eval()
    return model, processor, data.Encoder(processor, image_token_count(model.config), max_text_tokens=256)


def test_packed_rows_give_the_padded_loss_only_when_position_ids_restart(tiny):
    model, processor, encoder = tiny
    examples = [encoder.encode(example(i)) for i in range(4)]
    assert len({len(e.input_ids) for e in examples}) > 1  # length-skewed
    with torch.no_grad():
        padded_batch = data.padded_batch(examples, encoder, processor.tokenizer.pad_token_id)
        padded = data.token_loss_sum(model, padded_batch)
        packed_batch = data.packed_batch(examples, encoder)
        packed = data.token_loss_sum(model, packed_batch)
        # The same row with positions running on: examples attend to each other.
        leaking = {**packed_batch, "position_ids": torch.arange(packed_batch["input_ids"].shape[1])[None]}
        leaked = data.token_loss_sum(model, leaking)
    # The host's count is what the loss covers, padded or packed.
    covered = [int((batch["labels"][:, 1:] != data.IGNORE).sum()) for batch in (padded_batch, packed_batch)]
    assert covered == [data.trained_tokens(examples)] * 2 and covered[0] > 0
    assert packed.item() == pytest.approx(padded.item(), rel=1e-5)
    assert abs(leaked.item() - padded.item()) > 1e-3


def test_order_is_fixed_by_seed_and_epoch_and_covers_every_row(storage):
    write_mixture(storage, "stage1_mixture", 10)
    reader = data.MixtureReader(storage.fs, storage.strip_protocol(storage.read_manifest("stage1_mixture", None).data_url))
    first, again, other_epoch = reader.order(7, 0), reader.order(7, 0), reader.order(7, 1)
    assert sorted(first.tolist()) == list(range(10))
    assert first.tolist() == again.tolist() and first.tolist() != other_epoch.tolist()
    stream = data.ExampleStream(reader, seed=7)
    assert [stream.at(p)["example_id"] for p in range(10, 13)] == [reader.row(int(i))["example_id"] for i in other_epoch[:3]]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_position_of_a_step_goes_to_exactly_one_micro_batch(world):
    global_batch, micro = 8, 2
    seen = []
    for rank in range(world):
        batches = data.micro_batch_positions(16, global_batch, micro, world, rank)
        assert len(batches) == global_batch // (micro * world)
        seen += [p for b in batches for p in b]
    assert sorted(seen) == list(range(16, 24))


def test_gradient_checkpointing_gives_the_same_projector_gradients_through_a_frozen_llm():
    """Stage 1: the LLM is frozen but gradients must flow through it to the projector,
    also when its layers recompute activations in the backward pass."""
    from asagi_dagster.train.model import set_trainable

    grads = []
    for checkpointing in (False, True):
        model, processor = start_model()
        set_trainable(model, "stage1")
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        encoder = data.Encoder(processor, image_token_count(model.config), max_text_tokens=256)
        loss = data.token_loss_sum(model, data.packed_batch([encoder.encode(example(i)) for i in range(3)], encoder))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0] and all(name.startswith("model.multi_modal_projector.") for name in grads[0])
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("packing", [False, True])
def test_steps_built_in_dataloader_workers_are_the_steps_built_in_process(tiny, config, storage, packing):
    """The input pipeline runs in worker processes beside the step; what it hands over,
    step by step and in order, is exactly what the training process would build itself,
    from any starting position (a resumed run)."""
    _, processor, encoder = tiny
    mixture = storage.strip_protocol(write_mixture(storage, "stage1_mixture", 10))

    def steps(workers: int, first_position: int) -> list[dict]:
        dataset = data.StepBatches(config.storage, mixture, 3, encoder, processor.tokenizer.pad_token_id, packing, 4, 2, 2, 1, first_position, 5)
        return list(data.step_loader(dataset, workers, pin_memory=False))

    built, in_process = steps(2, 8), steps(0, 8)
    assert len(built) == 5 and all(len(step["batches"]) == 1 for step in built)  # rank 1 of 2: one micro batch of 2 a step
    for ours, theirs in zip(built, in_process, strict=True):
        assert ours["lengths"] == theirs["lengths"] and ours["trained_tokens"] == theirs["trained_tokens"] > 0
        for batch, expected in zip(ours["batches"], theirs["batches"], strict=True):
            assert batch.keys() == expected.keys()
            for key in batch:
                torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    resumed = steps(2, 8 + 2 * 4)  # from step 2: the same steps 2..
    for ours, theirs in zip(resumed, built[2:]):
        torch.testing.assert_close(ours["batches"][0]["input_ids"], theirs["batches"][0]["input_ids"], rtol=0, atol=0)


def test_a_photo_sized_jpeg_is_decoded_at_a_reduced_scale_no_smaller_than_the_tower_input(tiny):
    import io

    from PIL import Image

    _, _, encoder = tiny
    photo = io.BytesIO()
    Image.new("RGB", (2048, 1536), "orange").save(photo, "JPEG", quality=90)
    decoded = encoder.decode(photo.getvalue())
    width, height = encoder.image_size
    assert decoded.mode == "RGB" and decoded.width >= width and decoded.height >= height
    assert decoded.size == (2048 // 8, 1536 // 8)  # the tiny tower takes 32 px: the smallest scale, 1/8
