"""Synthesized corpora (the Asagi method): English captions from a VLM, Japanese long and
short captions, VQA and multiple-choice VQA from a Japanese LLM, and translations of
English datasets. Each run's partitions go to one GPU program through Pipes (a local
subprocess or a Kubernetes pod), which loads each model once for all of them; the
licence gate runs here first, before anything starts."""

import dagster as dg

from asagi_dagster.config import AsagiConfig
from asagi_dagster.storage import Manifest
from asagi_dagster.synth.corpora import LicenceRefused, licence_gate
from assets.metadata import accounted
from assets.shards import by_shard, shard_outputs
from assets.web import warc_shards
from resources.gpu_jobs import GpuJobsResource, gpu_run_tags
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "synthesis"
SYNTH_MODULE = "asagi_dagster.synth"


def synthesize(
    context,
    asset: str,
    profile: ProfileResource,
    storage: StorageResource,
    duckdb: DuckDBResource,
    gpu_jobs: GpuJobsResource,
    inputs: dict[str, dict[str, Manifest]],
):
    """One GPU program for every partition of the run (``inputs``: per input, its
    manifests by partition): each model is loaded once for the run's shards."""
    config = profile.settings
    try:
        licence_gate(config, asset)  # before any pod or process starts
    except LicenceRefused as refused:
        raise dg.Failure(str(refused), allow_retries=False) from None  # a retry would be refused again
    partitions = context.partition_keys
    extras = {
        "config": config.model_dump(mode="json"),
        "asset": asset,
        "partitions": {p: {name: by_partition[p].data_url for name, by_partition in inputs.items()} for p in partitions},
    }
    reported = {m.partition: m for m in map(Manifest.model_validate, gpu_jobs.run(context, "synthesis", SYNTH_MODULE, extras))}
    missing = [p for p in partitions if p not in reported]
    if missing:
        raise dg.Failure(f"{asset}: the synthesis program ended without reporting the output of {', '.join(missing[:5])}")
    yield from shard_outputs(context, storage, duckdb, {p: [reported[p]] for p in partitions})


def _corpus_asset(name: str, description: str, ins: list[str], partitions_def, partition_mapping=None):
    @dg.asset(
        name=name,
        group_name=GROUP,
        partitions_def=partitions_def,
        ins={dep: by_shard(dep, partition_mapping) for dep in ins},
        check_specs=[accounted(name)],
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),  # a retried run resumes from its committed chunks
        kinds={"python", "vllm"},
        description=description,
    )
    def corpus(
        context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource, gpu_jobs: GpuJobsResource, **inputs
    ):
        yield from synthesize(context, name, profile, storage, duckdb, gpu_jobs, inputs)

    return corpus


english_captions = _corpus_asset(
    "english_captions",
    "A detailed English caption of each filtered web pair's image, written by the caption VLM (Phi-3.5-vision in the cluster).",
    ["filtered_pairs", "pair_images"],
    warc_shards,
)
ja_captions = _corpus_asset(
    "ja_captions",
    "Long and short Japanese captions merging the English caption (what is visible) with the reference text (proper nouns).",
    ["english_captions", "reference_texts", "filtered_pairs"],
    warc_shards,
)
synthetic_vqa = _corpus_asset(
    "synthetic_vqa",
    "A question target, question and answer per image, grounded in its long Japanese caption.",
    ["ja_captions"],
    warc_shards,
)
synthetic_mcvqa = _corpus_asset(
    "synthetic_mcvqa",
    "Multiple-choice VQA: three wrong options clearly different from the answer, shuffled with it as A-D.",
    ["synthetic_vqa", "ja_captions"],
    warc_shards,
)


def build_translation_asset(config: AsagiConfig):
    """``translated_pairs``, one partition per English dataset the profile names."""
    names = sorted(config.synthesis.translate_datasets) if config.synthesis else []
    if not names:
        return None
    english = dg.StaticPartitionsDefinition(names)
    same_dataset = dg.StaticPartitionMapping({name: name for name in names})
    return _corpus_asset(
        "translated_pairs",
        "An English dataset's captions or question-answer pairs, translated into Japanese (one partition per dataset).",
        ["filtered_dataset_pairs", "dataset_pairs"],
        english,
        partition_mapping=same_dataset,
    )


SYNTHESIS_ASSETS = [english_captions, ja_captions, synthetic_vqa, synthetic_mcvqa]

synthesized_corpora = dg.define_asset_job(
    "synthesized_corpora",
    selection=dg.AssetSelection.assets(*SYNTHESIS_ASSETS),
    description="Per WARC shard: English captions, Japanese captions, VQA and multiple-choice VQA (GPU work, via Pipes).",
    tags=gpu_run_tags("synthesis"),
    executor_def=dg.multiprocess_executor,  # VQA and MCVQA pods run side by side
)
translation_job = dg.define_asset_job(
    "translated_datasets",
    selection=dg.AssetSelection.assets("translated_pairs"),
    description="Per English dataset: its captions or QA translated into Japanese (GPU work, via Pipes).",
    tags=gpu_run_tags("synthesis"),
)
