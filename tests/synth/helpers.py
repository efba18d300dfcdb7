"""Inputs for the synthesis tests: small upstream outputs written as the real assets write them."""

from __future__ import annotations

import copy

import dagster as dg

from asagi_dagster.definitions import build_definitions
from asagi_dagster.filters import schemas as filter_schemas
from asagi_dagster.reference import REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION
from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.synth.corpora import CORPORA, VERSION

GENERATORS = {
    "caption_vlm": {"model": "builtin:tiny-llava-ja", "licence": "Apache-2.0", "outputs_trainable": True, "modality": "image"},
    "japanese_llm": {"model": "builtin:tiny-llama-ja", "licence": "Apache-2.0", "outputs_trainable": True},
}
TASK_GENERATORS = {
    "english_caption": "caption_vlm",
    "ja_caption_long": "japanese_llm",
    "ja_caption_short": "japanese_llm",
    "vqa": "japanese_llm",
    "mcvqa": "japanese_llm",
    "translation": "japanese_llm",
}

ENGLISH = [
    "A white cup of coffee on a wooden table, with a small spoon beside it and a window behind.",
    "A brown horse running across a green field under a clear blue sky.",
    "A rocket lifting off from a launch pad, with a column of white smoke below it.",
    "A grey cat sleeping on a red cushion next to a potted plant.",
]


def synthesis_section(chunk_rows: int = 2, max_tokens: int = 24, **task_overrides) -> dict:
    tasks = {
        name: {"generator": generator, "sampling": {"max_tokens": max_tokens}, **task_overrides.get(name, {})} for name, generator in TASK_GENERATORS.items()
    }
    return {"generators": copy.deepcopy(GENERATORS), "tasks": tasks, "chunk_rows": chunk_rows}


def write_caption_inputs(storage: Storage, shard: str, pairs: int) -> dict[str, str]:
    """english_captions, reference_texts and filtered_pairs for ``pairs`` pairs, with their
    manifests (as if materialized); returns the data URLs."""
    urls = {}
    with StageWriter(storage, "english_captions", shard, CORPORA["english_captions"].schema, VERSION) as out:
        for i in range(pairs):
            out.count_in()
            out.write({"item_id": f"p{i}", "pair_id": f"p{i}", "text": ENGLISH[i % len(ENGLISH)] + f" (photo {i})", "task": "english_caption"})
    storage.write_manifest(out.manifest)
    urls["english_captions"] = out.manifest.data_url
    with StageWriter(storage, "reference_texts", shard, REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION) as out:
        for i in range(0, pairs, 2):  # every other pair has a reference text; the rest use their alt
            out.count_in()
            out.write({"pair_id": f"p{i}", "shard": shard, "reference_text": f"さくら書店の喫茶コーナー（写真{i}）"})
    storage.write_manifest(out.manifest)
    urls["reference_texts"] = out.manifest.data_url
    with StageWriter(storage, "filtered_pairs", shard, filter_schemas.FILTERED_PAIRS, filter_schemas.FILTERED_PAIRS_VERSION) as out:
        for i in range(pairs):
            out.count_in()
            out.write({"pair_id": f"p{i}", "source": "web", "shard": shard, "caption": f"写真{i}の説明"})
    storage.write_manifest(out.manifest)
    urls["filtered_pairs"] = out.manifest.data_url
    return urls


def materialize(profile, asset: str, shard: str, instance) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """One shard partition of one asset, in this process, on the profile's definitions
    (the shard registered first); returns the result and the run's log messages."""
    instance.add_dynamic_partitions("warc_shards", [shard])
    job = build_definitions(str(profile)).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, partition_key=shard, asset_selection=[dg.AssetKey(asset)], raise_on_error=False)
    return result, [e.message for e in instance.all_logs(result.run_id) if e.message]


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_specific_data.error.to_string()[-1500:] for e in result.get_step_failure_events()]
