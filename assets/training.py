"""Stage mixtures and the two training stages (Asagi): one text per image drawn from the
profile's weighted corpora, audited again against the benchmarks; then stage 1
(projector) and stage 2 (projector and LLM) as GPU work through Pipes, each ending in
a Hugging Face model folder on the storage root."""

import dagster as dg

from asagi_dagster.config import AsagiConfig
from asagi_dagster.previews import figure_data_uri
from asagi_dagster.storage import Manifest, ModelManifest
from asagi_dagster.train import mixture
from asagi_dagster.train.sources import check_mixture
from asagi_dagster.train.trainer import stage_job
from asagi_dagster.web.batches import files_of
from assets.filters import no_overlap_check, overlap_check
from assets.metadata import accounted, stage_results
from assets.web import warc_shards
from resources.gpu_jobs import GpuJobsResource, gpu_run_tags
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "training"
TRAIN_MODULE = "asagi_dagster.train"
# What a mixture reads, but translated_pairs only where the profile translates (below).
MIXTURE_DEPS = [asset for asset in mixture.MIXTURE_INPUTS if asset != "translated_pairs"]


def _training(profile: ProfileResource):
    settings = profile.settings.training
    if settings is None:
        raise dg.Failure("the profile has no training section: add one (see configs/cluster.example.yaml)", allow_retries=False)
    return settings


def _mixture_asset(stage: str, deps: list[str]):
    name = f"{stage}_mixture"

    @dg.asset(
        name=name,
        group_name=GROUP,
        deps=deps,
        ins={"benchmark_image_index": dg.AssetIn("benchmark_image_index")},
        check_specs=[accounted(name), no_overlap_check(name, blocking=True)],  # no training on benchmark images
        kinds={"parquet"},
        description=(
            f"Training examples of {stage}: one text per image drawn with training.{stage}.mixture's weights from every "
            "materialized shard and dataset, with the image bytes; counts per source in the manifest; audited again "
            "against the benchmark images."
        ),
    )
    def stage_mixture(
        context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource, benchmark_image_index: Manifest
    ):
        config = profile.settings
        training = _training(profile)
        weights = getattr(training, stage).mixture
        translated = config.synthesis.translate_datasets if config.synthesis else []
        shards = sorted(file for files in files_of(storage.storage, context.instance.get_dynamic_partitions(warc_shards.name)).values() for file in files)
        made = mixture.write_stage_mixture(storage.storage, stage, weights, training.seed, shards, config.sources.datasets, translated)
        first_missing = ", ".join(made.missing[: mixture.MISSING_SHOWN]) + (" ..." if len(made.missing) > mixture.MISSING_SHOWN else "")
        if made.missing:
            context.log.warning(f"{name}: {len(made.missing)} inputs not materialized, so not in the mixture: {first_missing}")
        if made.manifest.rows_out == 0:
            why = f"{len(made.missing)} inputs missing: {first_missing}" if made.missing else "all inputs empty"
            raise dg.Failure(f"{name} is empty: no source of training.{stage}.mixture has examples yet ({why})")
        yield from stage_results(
            storage,
            duckdb,
            made.manifest,
            examples_per_source=dg.MetadataValue.json({s: made.per_source.get(s, 0) for s in weights}),
            weights=dg.MetadataValue.json(weights),
            missing_inputs=len(made.missing),
            missing_inputs_first=dg.MetadataValue.json(made.missing[: mixture.MISSING_SHOWN]),
        )
        yield overlap_check(duckdb, made.manifest, benchmark_image_index, config.filters.decontamination.max_hamming)

    return stage_mixture


def _train_stage(context, stage: str, profile, storage, gpu_jobs, mixture_manifest: Manifest, start_from: ModelManifest | None):
    training = _training(profile)
    asset = f"vlm_{stage}"
    job = stage_job(training, profile.settings.models, storage.storage, stage, mixture_manifest, start_from)
    messages = gpu_jobs.run(context, "training", TRAIN_MODULE, job.model_dump(mode="json"), local_processes=training.processes_per_node)
    history = [m["metrics"] for m in messages if "metrics" in m]
    results = [m["result"] for m in messages if "result" in m]
    if not results:
        raise dg.Failure(f"{asset}: the training program ended without reporting its result")
    result = results[-1]
    manifest = ModelManifest(
        asset=asset,
        model_url=job.output_url,
        stage=stage,
        steps=result["steps"],
        examples=result["examples"],
        mixture_url=mixture_manifest.data_url,
        final_loss=history[-1]["loss"] if history else None,
        resumed_from=result["resumed_from"],
    )
    last = history[-1] if history else {}
    metadata = {
        "model": dg.MetadataValue.path(manifest.model_url),
        "steps": manifest.steps,
        "examples": manifest.examples,
        "resumed_from_step": manifest.resumed_from if manifest.resumed_from is not None else "none",
        "final_loss": rounded(last.get("loss", float("nan"))),
        "tokens_per_s": rounded(last.get("tokens_per_s", float("nan"))),
        "mfu": rounded(last.get("mfu", float("nan"))),
        "metrics": dg.MetadataValue.json([{k: rounded(v) for k, v in m.items()} for m in history]),
    }
    if history:
        metadata["loss"] = loss_sparkline([m["loss"] for m in history])  # inline on the asset page
        metadata["loss_curve"] = dg.MetadataValue.md(f"![loss curve]({loss_curve_png(history, asset)})")
    return dg.Output(manifest, metadata=metadata)


def rounded(value):
    """Four significant digits for reading in the UI (the manifest keeps the exact loss)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


SPARKS = "▁▂▃▄▅▆▇█"


def loss_sparkline(losses: list[float], width: int = 48) -> str:
    """The loss over the reported steps in one line of text (the UI shows short values
    inline; the plot is one click away): first value, a sparkline, last value."""
    buckets = [losses[i * len(losses) // width : (i + 1) * len(losses) // width] for i in range(width)] if len(losses) > width else [[v] for v in losses]
    means = [sum(b) / len(b) for b in buckets if b]
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    line = "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in means)
    return f"{losses[0]:.4g} {line} {losses[-1]:.4g} ({len(losses)} reports, low {min(losses):.4g})"


def loss_curve_png(history: list[dict], title: str) -> str:
    """The loss per reported step as a PNG data URI (the UI renders it in Markdown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3), dpi=80)
    axis.plot([m["step"] for m in history], [m["loss"] for m in history], marker=".")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (answer tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure_data_uri(figure)


TRAINING_RETRIES = dg.RetryPolicy(max_retries=2, delay=60)  # a retried run resumes from its last checkpoint


@dg.asset(
    group_name=GROUP,
    retry_policy=TRAINING_RETRIES,
    kinds={"pytorch", "huggingface"},
    description="Stage 1: the projector trained on stage1_mixture, SigLIP tower and LLM frozen. A Hugging Face LlavaForConditionalGeneration folder.",
)
def vlm_stage1(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, gpu_jobs: GpuJobsResource, stage1_mixture: Manifest):
    return _train_stage(context, "stage1", profile, storage, gpu_jobs, stage1_mixture, None)


@dg.asset(
    group_name=GROUP,
    retry_policy=TRAINING_RETRIES,
    kinds={"pytorch", "huggingface"},
    description=(
        "Stage 2: from stage 1's model, the projector and LLM trained on stage2_mixture, "
        "SigLIP frozen. A Hugging Face folder that loads in transformers and vLLM."
    ),
)
def vlm_stage2(
    context: dg.AssetExecutionContext,
    profile: ProfileResource,
    storage: StorageResource,
    gpu_jobs: GpuJobsResource,
    stage2_mixture: Manifest,
    vlm_stage1: ModelManifest,
):
    return _train_stage(context, "stage2", profile, storage, gpu_jobs, stage2_mixture, vlm_stage1)


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The training group: both mixtures and both stages, and their job; the mixtures
    depend on translated_pairs only where the profile translates datasets (otherwise it
    is no asset)."""
    if config.training is not None:  # a source name that is not registered fails the code location's load, not a run
        for stage in ("stage1", "stage2"):
            check_mixture(stage, getattr(config.training, stage).mixture)
    deps = MIXTURE_DEPS + (["translated_pairs"] if config.synthesis and config.synthesis.translate_datasets else [])
    assets = [_mixture_asset("stage1", deps), _mixture_asset("stage2", deps), vlm_stage1, vlm_stage2]
    job = dg.define_asset_job(
        "vlm_training",
        selection=dg.AssetSelection.assets(*assets),
        description="Both stage mixtures, then stage 1 and stage 2 training (GPU work, via Pipes); each stage resumes from its last checkpoint.",
        tags=gpu_run_tags("training"),
    )
    return dg.Definitions(assets=assets, jobs=[job])
