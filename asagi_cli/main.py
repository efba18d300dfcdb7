"""The ``asagi`` command: sample, sync, ingest, datasets, filter, synthesize, train, evaluate, report, catalog, judge-manifest, and ``demo`` (all of them).

Dagster state lives in the instance at $DAGSTER_HOME (default: the profile's
``dagster.home``), the same one ``dagster dev`` and ``dagster job backfill`` use.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import click
import yaml

from asagi_cli.console import Console
from asagi_cli.unchanged import INPUTS_TAG, inputs_fingerprint, outputs_present, unchanged_since
from asagi_dagster.config import AsagiConfig, load_config, profile_path
from asagi_dagster.report import format_summary, format_table, model_report, shard_report, summary_report, synthesis_note, to_json
from asagi_dagster.settings import ConfigError
from asagi_dagster.storage import Manifest, ModelManifest, Storage

PARTITIONS = "warc_shards"
CONSOLE = Console()
# The runs' loggers: warnings and errors on the console, progress lines through
# CONSOLE (a logger is used only when the run config names it).
_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}, "progress": {}}}


def _config() -> AsagiConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


# A new instance's settings. These machines reach no telemetry endpoint. The daemon
# (dagster dev, dagster-daemon run) fails runs stuck starting or canceling; a STARTED run
# whose worker died is not covered by run monitoring with the local run launcher, so the
# inbox re-sync finds those itself (assets/run_workers.py).
INSTANCE_SETTINGS = """\
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 600  # generous: a backfill starts many run workers at once
  cancel_timeout_seconds: 300
  max_resume_run_attempts: 0  # the local launcher cannot resume a run
concurrency:
  pools:
    default_limit: 1  # the one pool, image_hash_index: two adds to the index never run at once
"""
_EARLIER_SETTINGS = "telemetry:\n  enabled: false\n"  # what earlier versions wrote: upgraded


_INSTANCES: dict = {}  # DAGSTER_HOME -> the command's instance


def _instance(config: AsagiConfig):
    """The command's one Dagster instance: DagsterInstance.get() makes a new one per call,
    and with it the storage check and the hold's renewer thread would come once per run."""
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", config.dagster.home))
    if home not in _INSTANCES:
        _check_storage(config)
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "dagster.yaml"
        if not settings.exists() or settings.read_text() == _EARLIER_SETTINGS:  # never someone's own settings
            settings.write_text(INSTANCE_SETTINGS)
        _INSTANCES[home] = dg.DagsterInstance.get()
    return _INSTANCES[home]


def _sample_paths(config: AsagiConfig) -> tuple[Path, Path, str]:
    if config.sample is None:
        raise click.ClickException(f"profile {config.profile!r} has no 'sample' section")
    if "://" in config.sources.web.inbox:
        raise click.ClickException("the sample is written to a local inbox only")
    inbox = Path(config.sources.web.inbox)
    base = f"http://{config.sample.image_server_host}:{config.sample.image_server_port}"
    return inbox, inbox.parent / "sample_site", base


class _Commands(click.Group):
    """The commands, with the set-up mistakes users make said in one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _set_up_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _set_up_error(exc: Exception) -> str | None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "no S3 credentials for the profile's s3:// paths: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach S3: {exc} (the profile's storage.s3.endpoint_url, or the network)"
    if isinstance(exc, PermissionError):  # s3fs's for a refused key, as the OS's for a file
        return f"access refused: {exc} (the credentials, or the path's permissions)"
    return None


def _check_storage(config: AsagiConfig) -> None:
    """Reach the storage root once before any run starts: a run would only record the
    failure in its event log, one run after another."""
    if "://" in config.storage.root and not config.storage.root.startswith("file://"):
        storage = Storage(config.storage)
        storage.fs.exists(storage.root_path)


@click.group(cls=_Commands)
@click.version_option(package_name="asagi-dagster", prog_name="asagi")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="The profile (YAML). Default: $ASAGI_CONFIG, else configs/local.yaml (the embedded default).",
)
@click.option(
    "--rerun", is_flag=True, help="Run every step, also those whose inputs, settings and code are as in their last successful run (by default skipped)."
)
def main(config_path: str | None, rerun: bool) -> None:
    """asagi-dagster: web archives to Japanese VLM training data, run by Dagster.

    Every command reads one profile: --config, else $ASAGI_CONFIG, else configs/local.yaml.
    """
    if config_path:  # through the environment, so the Dagster definitions this process loads read it too
        os.environ["ASAGI_CONFIG"] = str(Path(config_path).resolve())
    # The console shows outcomes and what concerns the user, not the libraries' notices:
    # model-loading progress bars and load reports (here and in the GPU programs started
    # from here, through the environment), and Dagster's warnings about its own API.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", module=r"dagster(\.|$)")


@main.command()
def sample() -> None:
    """Write the bundled sample's WARC shards into the inbox, its served images, and the
    stand-in benchmark images the profile points at."""
    from asagi_sample.site import write_dataset_sample, write_filter_sample, write_sample

    config = _config()
    inbox, site, base = _sample_paths(config)
    written = write_sample(inbox, site, base)
    benchmarks = write_filter_sample(config.filters) + write_dataset_sample(config.sources.datasets) + _write_benchmark_sample(config)
    click.echo(
        f"sample in {inbox} ({len(written)} shard(s) written, images for {base} in {site}, {len(benchmarks)} benchmark, document-reference and dataset file(s))"
    )


@main.command("serve-sample")
def serve_sample() -> None:
    """Serve the sample's external images on loopback until interrupted."""
    from asagi_sample.server import start_image_server

    config = _config()
    _, site, base = _sample_paths(config)
    assert config.sample is not None  # _sample_paths refuses a profile without one
    server = start_image_server(site, config.sample.image_server_host, config.sample.image_server_port)
    click.echo(f"serving {site} at {base} (Ctrl-C to stop)")
    try:
        threading.Event().wait()  # the server runs in its own thread
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


def _sync(config: AsagiConfig) -> list[str]:
    from asagi_dagster.web.batches import registered_files
    from asagi_dagster.web.inbox import Inbox, plan_sync
    from assets.web import register_new

    instance, storage = _instance(config), Storage(config.storage)
    inbox = Inbox(config.sources.web.inbox, config.storage.s3)
    plan = plan_sync(inbox, registered_files(storage, instance.get_dynamic_partitions(PARTITIONS)), storage)
    for skipped in plan.skipped:
        click.echo(f"skipped {skipped}", err=True)
    return register_new(instance, storage, plan.new, config.sources.web.files_per_partition)


@main.command()
def sync() -> None:
    """Register the inbox's new shards as partitions in the Dagster instance."""
    added = _sync(_config())
    click.echo("\n".join(f"added {key}" for key in added) or "no new shards")


def _shards(config: AsagiConfig, partitions: tuple[str, ...], required: bool = False) -> list[str]:
    """The shards a command runs: those named, each of them registered, or every registered
    one; a user error in one line before any work starts."""
    from asagi_dagster.web.batches import batch_keys_of

    registered = _instance(config).get_dynamic_partitions(PARTITIONS)
    known = set(registered)
    # A file of a batch of several (sources.web.files_per_partition) stands for its batch.
    in_batches = batch_keys_of(Storage(config.storage), known, [key for key in partitions if key not in known])
    partitions = tuple(dict.fromkeys(in_batches.get(key, key) for key in partitions))
    unknown = [key for key in partitions if key not in known]
    if unknown:
        examples = f" (e.g. {', '.join(registered[:3])})" if registered else ""
        raise click.ClickException(
            f"not a registered shard: {', '.join(unknown[:3])}; {len(registered)} shards are registered{examples}, `asagi sync` registers the inbox's files"
        )
    if required and not registered:
        raise click.ClickException("no registered shards: `asagi sync` registers the inbox's files (`asagi sample` writes the sample's)")
    return list(partitions) or sorted(registered)


@functools.cache
def _hold(instance):
    from assets.cli_hold import CliHold

    return CliHold(instance)


def _execute(config: AsagiConfig, job_name: str, partition=None, position: tuple[int, int] | None = None) -> bool:
    """Run a job (one partition of it) in this process; the console shows its progress
    lines while it runs and its outcome at the end. Warnings and errors show too; the
    full event log is in the instance (the UI)."""
    instance = _instance(config)
    from asagi_dagster.definitions import defs  # built for the active profile on import

    job = defs.resolve_job_def(job_name)
    label = f"{job_name} {partition}" if partition is not None else job_name
    of = f"{position[0]}/{position[1]}, " if position else ""
    inputs = inputs_fingerprint(config, instance, job, defs.resolve_asset_graph(), partition)
    if not click.get_current_context().find_root().params["rerun"] and outputs_present(Storage(config.storage), job, partition):
        earlier = unchanged_since(instance, job_name, inputs)
        if earlier:
            CONSOLE.say(f"{label}: unchanged ({of}same inputs as run {earlier}), skipped")
            return True
    job = job.with_logger_defs({**job.loggers, "progress": CONSOLE.logger_def()})
    _hold(instance).renew(label)  # the automations of a `dagster dev` on this instance stand aside
    began = time.perf_counter()
    with CONSOLE.running(label):
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False, run_config=_LOGGERS, tags={INPUTS_TAG: inputs})
    CONSOLE.say(f"{label}: {'success' if result.success else 'FAILED'} ({of}{time.perf_counter() - began:.1f} s, run {result.run_id})")
    return result.success


def _execute_each(config: AsagiConfig, job_name: str, partitions: list) -> bool:
    """One run per partition, in order; every one runs even when an earlier one failed."""
    return all([_execute(config, job_name, key, (number, len(partitions))) for number, key in enumerate(partitions, 1)])


def _run_per_shard(config: AsagiConfig, job_name: str, partitions: tuple[str, ...]) -> bool:
    """Run a shard-partitioned job in this process, once per shard (default: every registered one)."""
    return _execute_each(config, job_name, _shards(config, partitions))


def _ingest(config: AsagiConfig, partitions: tuple[str, ...]) -> bool:
    return _run_per_shard(config, "web_ingest", tuple(_shards(config, partitions, required=True)))


def _run_per_dataset(config: AsagiConfig, job_name: str, names: list[str] | None = None) -> bool:
    """Run a dataset-partitioned job once per dataset (default: every dataset the profile lists)."""
    return _execute_each(config, job_name, sorted(config.sources.datasets if names is None else names))


def _filter(config: AsagiConfig, partitions: tuple[str, ...]) -> bool:
    """The evaluated benchmarks' items (decontamination reads their images), the indexes over
    everything screened, then each shard's and dataset's filtered pairs."""
    _shards(config, partitions)  # a wrong shard fails here, not after the indexes are rebuilt
    if config.evaluation and not _execute_each(config, "load_benchmarks", sorted(config.evaluation.benchmarks)):
        return False
    if not _execute(config, "filter_indexes"):
        return False
    shards_ok = _run_per_shard(config, "filtered_splits", partitions)
    return (partitions or _run_per_dataset(config, "filtered_dataset_splits")) and shards_ok


@main.command()
@click.option("--partition", "partitions", multiple=True, help="Shard key; default: every registered shard.")
def ingest(partitions: tuple[str, ...]) -> None:
    """Run the web_ingest job in this process for registered shards (runs show in the UI)."""
    if not _ingest(_config(), partitions):
        sys.exit(1)


@main.command()
@click.option("--partition", "partitions", multiple=True, help="Shard key; default: every registered shard.")
def backfill(partitions: tuple[str, ...]) -> None:
    """Ask the Dagster daemon for one backfill of the ingest assets over registered shards,
    in runs of sources.web.shards_per_run shards (the daemon of `dagster dev` or
    `dagster-daemon run` launches them; the UI shows each shard's status)."""
    config = _config()
    keys = _shards(config, partitions, required=True)
    from assets.web import submit_ingest_backfill

    backfill_id = submit_ingest_backfill(_instance(config), keys, "asagi backfill")
    click.echo(f"backfill {backfill_id}: {len(keys)} shards in runs of up to {config.sources.web.shards_per_run}")


@main.command()
@click.option("--partition", "names", multiple=True, help="A dataset of sources.datasets; default: every one.")
def datasets(names: tuple[str, ...]) -> None:
    """Read and screen the open datasets the profile lists (dataset_ingest per dataset)."""
    config = _config()
    unknown = [name for name in names if name not in config.sources.datasets]
    if unknown:
        raise click.ClickException(
            f"not a dataset of sources.datasets: {', '.join(unknown)}; choose from {', '.join(sorted(config.sources.datasets)) or 'none'}"
        )
    if not _run_per_dataset(config, "dataset_ingest", list(names) or None):
        sys.exit(1)


@main.command(name="filter")
@click.option("--partition", "partitions", multiple=True, help="Shard key; default: every registered shard.")
def filter_(partitions: tuple[str, ...]) -> None:
    """Rebuild the dedup and benchmark indexes, then filter shards' screened pairs."""
    if not _filter(_config(), partitions):
        sys.exit(1)


def _synthesize(config: AsagiConfig, partitions: tuple[str, ...]) -> bool:
    """Each shard's synthesized corpora, then (for a full run) each English dataset's translation."""
    if config.synthesis is None:
        raise click.ClickException("the profile has no synthesis section (generators and tasks)")
    shards_ok = _run_per_shard(config, "synthesized_corpora", partitions)
    if partitions or not config.synthesis.translate_datasets:
        return shards_ok
    return _run_per_dataset(config, "translated_datasets", config.synthesis.translate_datasets) and shards_ok


@main.command()
@click.option("--partition", "partitions", multiple=True, help="Shard key; default: every registered shard and every dataset to translate.")
def synthesize(partitions: tuple[str, ...]) -> None:
    """Generate the synthesized corpora (captions, VQA, MCVQA, translations) through the GPU-job runner."""
    if not _synthesize(_config(), partitions):
        sys.exit(1)


def _train(config: AsagiConfig) -> bool:
    """Both stage mixtures, then stage 1 and stage 2 (the vlm_training job, in this process)."""
    if config.training is None:
        raise click.ClickException("the profile has no training section")
    if not _execute(config, "vlm_training"):
        return False
    model = Storage(config.storage).read_manifest("vlm_stage2", None)
    assert isinstance(model, ModelManifest)
    click.echo(f"model: {model.model_url}")
    return True


@main.command()
@click.option(
    "--write-job",
    "stage",
    type=click.Choice(["stage1", "stage2"]),
    help="Only write this stage's job (for a multi-node run, k8s/training/) instead of training.",
)
@click.option("--to", "job_url", help="Where --write-job writes the job JSON (a path or s3:// URL).")
def train(stage: str | None, job_url: str | None) -> None:
    """Build the stage mixtures and train stage 1 then stage 2 through the GPU-job runner;
    a re-run resumes each stage from its last checkpoint."""
    config = _config()
    if stage:
        _write_job(config, stage, job_url)
    elif not _train(config):
        sys.exit(1)


def _write_job(config: AsagiConfig, stage: str, job_url: str | None) -> None:
    """The TrainJob a stage would run, from the committed mixture (and stage 1's model)."""
    import fsspec.core

    from asagi_dagster.storage import fsspec_options
    from asagi_dagster.train.trainer import stage_job

    if not job_url:
        raise click.ClickException("--write-job needs --to <path or URL>")
    if config.training is None:
        raise click.ClickException("the profile has no training section")
    storage = Storage(config.storage)
    mixture_asset = f"{stage}_mixture"
    if not storage.exists(storage.manifest_path(mixture_asset, None)):
        raise click.ClickException(f"{mixture_asset} is not materialized yet: materialize it first")
    start_from: ModelManifest | None = None
    if stage == "stage2":
        if not storage.exists(storage.manifest_path("vlm_stage1", None)):
            raise click.ClickException("stage 2 starts from vlm_stage1, which is not materialized yet")
        model = storage.read_manifest("vlm_stage1", None)
        assert isinstance(model, ModelManifest)
        start_from = model
    mixture = storage.read_manifest(mixture_asset, None)
    assert isinstance(mixture, Manifest)
    job = stage_job(config.training, config.models, storage, stage, mixture, start_from)
    fs, path = fsspec.core.url_to_fs(job_url, **fsspec_options(job_url, config.storage.s3))
    staged = f"{path}.partial"
    fs.pipe_file(staged, job.model_dump_json(indent=1).encode())  # one PUT on s3; then a rename
    fs.mv(staged, path)
    click.echo(f"wrote the {stage} job to {job_url}: model -> {job.output_url}")


def _write_benchmark_sample(config: AsagiConfig) -> list[Path]:
    from asagi_sample.benchmarks import write_benchmark_sample

    return write_benchmark_sample(config.evaluation.benchmarks) if config.evaluation else []


def _evaluate(config: AsagiConfig, models: tuple[str, ...] = (), benchmarks: tuple[str, ...] = ()) -> bool:
    """Each benchmark's items, each (model, benchmark)'s predictions and scores, then the leaderboard."""
    if config.evaluation is None:
        raise click.ClickException("the profile has no evaluation section")
    import dagster as dg

    unknown = [model for model in models if model not in config.evaluation.models]
    if unknown:
        raise click.ClickException(f"not a model of evaluation.models: {', '.join(unknown)}; choose from {', '.join(config.evaluation.models)}")
    unknown = [name for name in benchmarks if name not in config.evaluation.benchmarks]
    if unknown:
        raise click.ClickException(
            f"not a benchmark of evaluation.benchmarks: {', '.join(unknown)}; choose from {', '.join(sorted(config.evaluation.benchmarks))}"
        )
    names = sorted(benchmarks or config.evaluation.benchmarks)
    ok = _execute_each(config, "load_benchmarks", names)
    pairs = [dg.MultiPartitionKey({"benchmark": name, "model": model}) for model in models or config.evaluation.models for name in names]
    ok &= _execute_each(config, "evaluate_model", pairs)
    if not _execute(config, "update_leaderboard"):
        return False
    records = _instance(config).get_latest_materialization_event(dg.AssetKey("leaderboard")).asset_materialization.metadata
    click.echo(records["table"].value)
    return ok


@main.command()
@click.option("--model", "models", multiple=True, help="A model of the profile's evaluation.models (the demo's: vlm_stage2); default: all of them.")
@click.option("--benchmark", "benchmarks", multiple=True, help="A benchmark of evaluation.benchmarks; default: all of them.")
def evaluate(models: tuple[str, ...], benchmarks: tuple[str, ...]) -> None:
    """Score models on the profile's benchmarks (predictions through the GPU-job runner,
    ROUGE-L and the judge), then print the leaderboard."""
    if not _evaluate(_config(), models, benchmarks):
        sys.exit(1)


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: kubectl reads them, people read plain YAML better."""

    def ignore_aliases(self, data) -> bool:
        return True


@main.command("judge-manifest")
def judge_manifest() -> None:
    """Print the judge server (a vLLM Deployment and its Service) for the profile's
    evaluation.judge and gpu_jobs.pods.judge, for kubectl apply -f -."""
    from asagi_dagster.pods import judge_manifests

    try:
        config = _config()
        documents = judge_manifests(config.evaluation.judge if config.evaluation else None, config.gpu_jobs)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False), nl=False)


@main.command()
@click.option("--shards", is_flag=True, help="One line per asset and shard instead of the summary.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(shards: bool, as_json: bool) -> None:
    """Rows in, out and rejected by reason: by asset (default) or per shard, from the manifest catalog."""
    config = _config()
    storage = Storage(config.storage)
    if shards:
        rows = shard_report(storage, config.storage.duckdb_path)
        # JSON: the row accounts; the table also lists trained models.
        click.echo(to_json(rows) if as_json else format_table(rows, model_report(storage)))
    else:
        summary = summary_report(storage, config.storage.duckdb_path)
        click.echo(to_json(summary) if as_json else format_summary(summary, _report_notes(config, summary)))


def _report_notes(config: AsagiConfig, summary: dict) -> list[str]:
    from asagi_dagster.synth.corpora import CORPORA

    tiny = config.synthesis is not None and any(g.builtin for g in config.synthesis.generators.values())
    note = synthesis_note(summary, list(CORPORA), tiny)
    return [note] if note else []


@main.group(name="catalog")
def catalog_() -> None:
    """The manifest catalog that reports, re-syncs, mixtures and index rebuilds read."""


@catalog_.command()
@click.option("--merge", is_flag=True, help="Also merge every compacted file into one.")
def compact(merge: bool) -> None:
    """Fold the catalog's log into a compacted file (writers also do it past a log of 500)."""
    from asagi_dagster import catalog

    done = catalog.compact(Storage(_config().storage), merge_all=merge)
    if done.yielded:
        click.echo("another compaction is folding these files; nothing done")
    elif done.output is None:
        click.echo("nothing to compact")
    else:
        click.echo(f"folded {done.log_entries} log entries and {done.compacted_files} compacted files into {done.output} ({done.entries} entries)")


@catalog_.command()
def check() -> None:
    """Compare the catalog with every manifest file (reads them all: O(shards x assets) requests)."""
    from asagi_dagster import catalog

    result = catalog.check(Storage(_config().storage))
    click.echo(f"read {result.manifests} manifest files and {result.entries} catalog entries")
    for name, keys in (("not in the catalog", result.missing), ("older in the catalog", result.stale), ("in the catalog, no manifest file", result.orphaned)):
        for key in keys:
            click.echo(f"{name}: {key}")
    if not result.ok:
        click.echo("the catalog differs from the manifest files (a commit under way shows here too): asagi catalog rebuild", err=True)
        sys.exit(1)
    click.echo("the catalog matches the manifest files")


@catalog_.command()
def rebuild() -> None:
    """Rewrite the catalog from the manifest files (reads them all)."""
    from asagi_dagster import catalog

    click.echo(f"rebuilt the catalog: {catalog.rebuild(Storage(_config().storage))} entries")


def _serves(base: str, site: Path) -> bool:
    """Whether ``base`` already serves ``site`` (a running `asagi serve-sample`): one of its
    files comes back byte for byte."""
    import urllib.request

    sample = next((p for p in sorted(site.rglob("*")) if p.is_file()), None)
    if sample is None:
        return False
    try:
        with urllib.request.urlopen(f"{base}/{sample.relative_to(site).as_posix()}", timeout=5) as response:
            return response.read() == sample.read_bytes()
    except OSError:
        return False


def _where_things_are(config: AsagiConfig, storage: Storage) -> str:
    """The demo's last words: where its outputs are and how to look at them."""
    lines = ["", "where everything is:", f"  storage root     {config.storage.root}"]
    if config.storage.duckdb_path:
        lines.append(f"  DuckDB file      {config.storage.duckdb_path}")
        query = "SELECT asset, sum(rows_out) AS rows FROM manifests GROUP BY asset"
        lines.append(f"                   try: python -c \"import duckdb; duckdb.connect('{config.storage.duckdb_path}').sql('{query}').show()\"")
    for model in model_report(storage):
        lines.append(f"  {model['asset']:<16} {model['model_url']}")
    if storage.exists(storage.manifest_path("leaderboard", None)):
        leaderboard = storage.read_manifest("leaderboard", None)
        assert isinstance(leaderboard, Manifest)
        lines.append(f"  leaderboard      {leaderboard.data_url}")
    home = os.environ.get("DAGSTER_HOME", config.dagster.home)
    lines.append(
        f"  in the UI:       cd {Path(__file__).resolve().parent.parent} && DAGSTER_HOME={home} "
        f"ASAGI_CONFIG={os.environ.get('ASAGI_CONFIG') or profile_path()} dagster dev"
    )
    return "\n".join(lines)


@main.command()
def demo() -> None:
    """The embedded default end to end: sample, image server, sync, ingest, datasets, filter,
    synthesize, train and evaluate on the benchmarks (when the profile configures them), report."""
    from asagi_sample.server import start_image_server
    from asagi_sample.site import write_dataset_sample, write_filter_sample, write_sample

    config = _config()
    inbox, site, base = _sample_paths(config)
    assert config.sample is not None  # _sample_paths refuses a profile without one
    _hold(_instance(config)).renew("demo")  # before its files land in the inbox: it ingests them itself
    write_sample(inbox, site, base)
    write_filter_sample(config.filters)
    write_dataset_sample(config.sources.datasets)
    _write_benchmark_sample(config)
    try:
        server = start_image_server(site, config.sample.image_server_host, config.sample.image_server_port)
    except OSError as exc:
        if not _serves(base, site):
            raise click.ClickException(f"cannot serve the sample images at {base}: {exc}") from None
        click.echo(f"the sample's images are already served at {base} (asagi serve-sample): the demo uses that server")
        server = None
    phases: list[tuple[str, float]] = []

    def phase(name: str, work) -> bool:
        CONSOLE.say(f"== {name}")
        began = time.perf_counter()
        done = work()
        phases.append((name, time.perf_counter() - began))
        return done

    try:
        for key in _sync(config):
            click.echo(f"registered shard {key}")
        ok = (
            phase("ingest", lambda: _ingest(config, ()))
            and phase("datasets", lambda: _run_per_dataset(config, "dataset_ingest"))
            and phase("filter", lambda: _filter(config, ()))
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if ok and config.synthesis is not None:  # needs no image server: it reads stored pairs and images
        ok = phase("synthesize", lambda: _synthesize(config, ()))
    if ok and config.training is not None:
        ok = phase("train", lambda: _train(config))
    if ok and config.evaluation is not None:
        ok = phase("evaluate", lambda: _evaluate(config))
    storage = Storage(config.storage)
    click.echo(format_table(shard_report(storage, config.storage.duckdb_path), model_report(storage)))
    for note in _report_notes(config, summary_report(storage, config.storage.duckdb_path)):
        click.echo(note)
    click.echo("\nphase times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases) + f"; total {sum(s for _, s in phases):.0f} s")
    click.echo(_where_things_are(config, storage))
    if not ok:
        sys.exit(1)
