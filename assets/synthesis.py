"""Synthesized corpora (the Asagi method): English captions from a VLM, Japanese long and
short captions, VQA and multiple-choice VQA from a Japanese LLM, and translations of
English datasets. Each run's partitions go to one GPU program through Pipes (a local
subprocess or a Kubernetes pod), which loads each model once for all of them; the
licence gate runs here first, before anything starts."""

import dagster as dg

from asagi_dagster.config import AsagiConfig
from asagi_dagster.storage import Manifest
from asagi_dagster.synth.corpora import CORPORA, Corpus
from asagi_dagster.synth.generate import LicenceRefused, check_tasks, licence_gate
from assets.metadata import accounted
from assets.shards import by_shard, run_files, shard_batches, shard_outputs
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
        licence_gate(config.synthesis, asset)  # before any pod or process starts
    except LicenceRefused as refused:
        raise dg.Failure(str(refused), allow_retries=False) from None  # a retry would be refused again
    partitions = [shard for files in run_files(context, storage).values() for shard in files]  # a batch's files (D111)
    extras = {
        "synthesis": config.synthesis.model_dump(mode="json") if config.synthesis else None,
        "storage": config.storage.model_dump(mode="json"),
        "asset": asset,
        "partitions": {p: {name: by_partition[p].data_url for name, by_partition in inputs.items()} for p in partitions},
    }
    reported = {m.partition: m for m in map(Manifest.model_validate, gpu_jobs.run(context, "synthesis", SYNTH_MODULE, extras))}
    missing = [p for p in partitions if p not in reported]
    if missing:
        raise dg.Failure(f"{asset}: the synthesis program ended without reporting the output of {', '.join(missing[:5])}")
    yield from shard_outputs(context, storage, duckdb, {p: [reported[p]] for p in partitions}, record=False)  # recorded as committed


def _corpus_asset(corpus: Corpus, partitions_def, partition_mapping=None):
    @dg.asset(
        name=corpus.name,
        group_name=GROUP,
        partitions_def=partitions_def,
        ins={dep: by_shard(dep, partition_mapping) for dep in corpus.inputs},
        check_specs=[accounted(corpus.name)],
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),  # a retried run resumes from its committed chunks
        kinds={"python", "vllm"},
        description=corpus.description,
    )
    def corpus_asset(
        context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource, gpu_jobs: GpuJobsResource, **inputs
    ):
        yield from synthesize(context, corpus.name, profile, storage, duckdb, gpu_jobs, inputs)

    return corpus_asset


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The synthesis group: every registered corpus as an asset, the per-shard ones always
    (batched per shard like ingest; they fail at run time without a synthesis section),
    the per-dataset ones for the English datasets the profile translates; their jobs."""
    if config.synthesis is not None:
        check_tasks(config.synthesis)  # a bad task name or generator fails the code location's load, not a run
    batches = shard_batches(config.sources.web.shards_per_run)
    per_shard = [_corpus_asset(corpus, warc_shards).with_attributes(backfill_policy=batches) for corpus in CORPORA.values() if corpus.partitions == "shards"]
    jobs = [
        dg.define_asset_job(
            "synthesized_corpora",
            selection=dg.AssetSelection.assets(*per_shard),
            description="Per WARC shard: English captions, Japanese captions, VQA and multiple-choice VQA (GPU work, via Pipes).",
            tags=gpu_run_tags("synthesis"),
            executor_def=dg.multiprocess_executor,  # VQA and MCVQA pods run side by side
        )
    ]
    names = sorted(config.synthesis.translate_datasets) if config.synthesis else []
    per_dataset: list[dg.AssetsDefinition] = []
    if names:
        english = dg.StaticPartitionsDefinition(names)
        same_dataset = dg.StaticPartitionMapping({name: name for name in names})
        per_dataset = [_corpus_asset(corpus, english, same_dataset) for corpus in CORPORA.values() if corpus.partitions == "datasets"]
        jobs.append(
            dg.define_asset_job(
                "translated_datasets",
                selection=dg.AssetSelection.assets(*per_dataset),
                description="Per English dataset: its captions or QA translated into Japanese (GPU work, via Pipes).",
                tags=gpu_run_tags("synthesis"),
            )
        )
    return dg.Definitions(assets=[*per_shard, *per_dataset], jobs=jobs)
