"""english_captions: a detailed English caption of each filtered web pair's image,
written by a VLM that sees the image (Phi-3.5-vision in the cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth.corpora.base import PROVENANCE, Corpus, rows
from asagi_dagster.synth.prompts import Prompt
from asagi_dagster.synth.runner import TaskPlan
from asagi_dagster.synth.tasks import Item, Task

PROMPT = Prompt(
    id="english_caption",
    version=1,
    system=None,
    instruction=(
        "Describe this image in detail in English, as one paragraph of plain prose.\n"
        "Cover the main subject, what surrounds it, colours, counts, positions and any actions.\n"
        "Do not read out or mention any text, letters or logos written in the image."
    ),
)
ENGLISH_CAPTION = Task(
    "english_caption",
    PROMPT,
    japanese=False,
    image=True,
    parse=lambda text, item, seed: {"text": text},
    defaults={"generator": "caption_vlm", "min_chars": 40, "max_chars": 2000},
)


def items(storage: Storage, inputs: dict[str, str], plans: dict[str, TaskPlan], out: StageWriter) -> Iterator[tuple[TaskPlan, Item]]:
    plan = plans.get("english_caption")
    if plan is None:
        return
    wanted = {row["pair_id"] for row in rows(storage, inputs["filtered_pairs"], ["pair_id"])}
    for batch in storage.iter_batches(storage.strip_protocol(inputs["pair_images"]), ["pair_id", "bytes"], batch_rows=16):
        for image in batch.to_pylist():
            if image["pair_id"] in wanted:
                wanted.discard(image["pair_id"])
                yield plan, Item(image["pair_id"], image["pair_id"], {}, image=image["bytes"])
    for pair_id in sorted(wanted):  # kept by the filters but gone from the image file
        out.count_in()
        out.reject(pair_id, "image_missing", "not in the shard's pair_images file")


CORPUS = Corpus(
    name="english_captions",
    description="A detailed English caption of each filtered web pair's image, written by the caption VLM (Phi-3.5-vision in the cluster).",
    tasks=(ENGLISH_CAPTION,),
    inputs=("filtered_pairs", "pair_images"),
    schema=pa.schema(PROVENANCE),
    items=items,
    rejections=("image_missing",),
)
