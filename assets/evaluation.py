"""Benchmark scores with llm-jp-eval-mm 0.4.1's semantics: the benchmarks' items, each
model's predictions (GPU work through Pipes), their ROUGE-L and judge scores, and a
leaderboard beside the published models."""

import dagster as dg

from asagi_dagster.benchmarks import BENCHMARKS, ITEMS_SCHEMA, ITEMS_VERSION, RejectedItem
from asagi_dagster.config import AsagiConfig
from asagi_dagster.eval import leaderboard as board
from asagi_dagster.eval.items import dataset_folder, read_items
from asagi_dagster.eval.judge_client import Judge
from asagi_dagster.eval.predict import PredictionJob, prediction_file
from asagi_dagster.eval.scores import ITEM_SCORES, NO_JUDGE, append_history, history_glob, score
from asagi_dagster.eval.scores import VERSION as SCORES_VERSION
from asagi_dagster.eval.settings import TRAINED_MODELS
from asagi_dagster.storage import Manifest, ModelManifest, StageWriter
from assets.cli_hold import BUILD_WHEN_MISSING, automation_sensor, while_no_cli_runs
from assets.metadata import accounted, stage_results
from resources.gpu_jobs import GpuJobsResource, gpu_run_tags
from resources.storage import DuckDBResource, ProfileResource, StorageResource

GROUP = "evaluation"
EVAL_MODULE = "asagi_dagster.eval"


def _evaluation(profile: ProfileResource):
    settings = profile.settings.evaluation
    if settings is None:
        raise dg.Failure("the profile has no evaluation section", allow_retries=False)
    return settings


def build_defs(config: AsagiConfig) -> dg.Definitions:
    """The evaluation group: items, predictions and scores for the benchmarks and models the
    profile evaluates, the leaderboard, their jobs and sensor; nothing without an
    evaluation section."""
    if config.evaluation is None:
        return dg.Definitions()
    evaluation = config.evaluation
    per_benchmark = dg.StaticPartitionsDefinition(list(evaluation.benchmarks))
    per_model_and_benchmark = dg.MultiPartitionsDefinition({"benchmark": per_benchmark, "model": dg.StaticPartitionsDefinition(evaluation.models)})
    trained = [m for m in evaluation.models if m in TRAINED_MODELS]

    @dg.asset(
        group_name=GROUP,
        partitions_def=per_benchmark,
        check_specs=[accounted("benchmark_items")],
        automation_condition=while_no_cli_runs(BUILD_WHEN_MISSING),  # decontamination waits for every benchmark's items
        kinds={"parquet"},
        description=(
            "A benchmark's items as eval-mm reads them (image, question, reference answer, category, context), from "
            "the profile's local copy of the dataset or its pinned hub revision; JA-VG-VQA-500 one item per QA."
        ),
    )
    def benchmark_items(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
        settings = _evaluation(profile)
        benchmark = BENCHMARKS[context.partition_key]
        source = settings.benchmarks[benchmark.name]
        folder = dataset_folder(benchmark, source, settings.allow_hub)
        with StageWriter(storage.storage, "benchmark_items", benchmark.name, ITEMS_SCHEMA, ITEMS_VERSION) as out:
            for item in read_items(benchmark, folder, source.limit):
                out.count_in()
                if isinstance(item, RejectedItem):
                    out.reject(item.question_id, item.reason, item.detail)
                else:
                    out.write(item, size_hint=len(item["bytes"]))
            out.source = {"folder": str(folder), "limit": str(source.limit or "")}
        if out.manifest.rows_out == 0:
            raise dg.Failure(f"benchmark_items {benchmark.name}: no usable item in {folder}")
        yield from stage_results(storage, duckdb, out.manifest, source=dg.MetadataValue.path(str(folder)), limited_to=source.limit or "all items")

    @dg.asset(
        group_name=GROUP,
        partitions_def=per_model_and_benchmark,
        deps=trained,
        check_specs=[accounted("benchmark_predictions")],
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
        kinds={"parquet"},
        description=(
            "A model's answers to a benchmark: greedy, evaluation.max_new_tokens, the model's own chat template plus the "
            "benchmark's instruction; through the GPU-job runner (transformers locally, vLLM in a pod). Also eval-mm's prediction.jsonl."
        ),
    )
    def benchmark_predictions(
        context: dg.AssetExecutionContext,
        profile: ProfileResource,
        storage: StorageResource,
        duckdb: DuckDBResource,
        gpu_jobs: GpuJobsResource,
        benchmark_items: Manifest,
    ):
        settings = _evaluation(profile)
        keys = context.partition_key.keys_by_dimension
        model_url, on_storage, revision = _model(profile, storage, keys["model"])
        job = PredictionJob(
            storage=profile.settings.storage,
            asset="benchmark_predictions",
            partition=context.partition_key,
            benchmark=keys["benchmark"],
            model=keys["model"],
            model_url=model_url,
            on_storage=on_storage,
            revision=revision,
            items_url=benchmark_items.data_url,
            items=benchmark_items.rows_out,
            instruction=settings.benchmarks[keys["benchmark"]].instruction,
            engine=settings.engine,
            max_new_tokens=settings.max_new_tokens,
        )
        messages = gpu_jobs.run(context, "evaluation", EVAL_MODULE, job.model_dump(mode="json"))
        if not messages:
            raise dg.Failure("the prediction program ended without reporting its manifest")
        manifest = Manifest.model_validate(messages[-1])
        yield from stage_results(
            storage,
            duckdb,
            manifest,
            model=dg.MetadataValue.path(model_url),
            prediction_jsonl=dg.MetadataValue.path(storage.storage.url(prediction_file(storage.storage, manifest))),
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=per_model_and_benchmark,
        check_specs=[accounted("benchmark_scores")],
        kinds={"parquet", "duckdb"},
        description=(
            "ROUGE-L (eval-mm 0.4.1's, per item and mean) and the LLM judge's score (Heron-Bench: relative %, the others: "
            "1-5), with the judge's model, prompt version, seed and repeats; appended to benchmark_score_history."
        ),
    )
    def benchmark_scores(
        context: dg.AssetExecutionContext,
        profile: ProfileResource,
        storage: StorageResource,
        duckdb: DuckDBResource,
        benchmark_items: Manifest,
        benchmark_predictions: Manifest,
    ):
        settings = _evaluation(profile)
        keys = context.partition_key.keys_by_dimension
        st = storage.storage
        items = list(st.iter_rows(st.strip_protocol(benchmark_items.data_url), columns=["question_id", "question", "reference", "category", "context"]))
        predictions = {r["question_id"]: r["text"] for r in st.iter_rows(st.strip_protocol(benchmark_predictions.data_url), columns=["question_id", "text"])}
        judge = Judge(settings.judge) if settings.judge else None
        result = score(keys["benchmark"], items, predictions, judge)
        with StageWriter(st, "benchmark_scores", context.partition_key, ITEM_SCORES, SCORES_VERSION) as out:
            out.count_in(len(result.item_rows))
            for row in result.item_rows:
                out.write(row)
        append_history(st, context.run.run_id, keys["model"], benchmark_predictions.source["model_url"], keys["benchmark"], result.metrics)
        metrics = {m["metric"]: m for m in result.metrics}
        llm = metrics["llm"]
        yield from stage_results(
            storage,
            duckdb,
            out.manifest,
            rougel=metrics["rougel"]["value"],
            llm=llm["value"] if llm["value"] is not None else NO_JUDGE,
            judge_model=llm["judge_model"] or "none",
            judge_prompt_version=llm["judge_prompt_version"] or "none",
            judge_parse_failures=llm["parse_failures"] if llm["parse_failures"] is not None else "not computed",
            missing_predictions=sum(r["prediction_missing"] for r in result.item_rows),
            metrics=dg.MetadataValue.json(result.metrics),
        )

    @dg.asset(
        group_name=GROUP,
        deps=[benchmark_scores],
        kinds={"duckdb"},
        automation_condition=while_no_cli_runs(dg.AutomationCondition.eager()),
        description=(
            "Our models' latest scores beside the published ones (Asagi-2B/4B/14B, llm-jp-3-vila-14b, GPT-4o): a Markdown "
            "table and a bar chart; each judge column names its judge, as judge scores compare only under one judge."
        ),
    )
    def leaderboard(profile: ProfileResource, storage: StorageResource, duckdb: DuckDBResource):
        st = storage.storage
        if not st.fs.glob(st.strip_protocol(history_glob(st))):
            raise dg.Failure("no benchmark scores yet: materialize benchmark_scores first")
        with duckdb.connect() as con:
            cursor = con.execute(board.latest_scores_sql(history_glob(st)))
            names = [d[0] for d in cursor.description]
            ours = [dict(zip(names, row)) for row in cursor.fetchall()]
        rows = board.entries(ours)
        with StageWriter(st, "leaderboard", None, board.SCHEMA, 1) as out:
            out.count_in(len(rows))
            for row in rows:
                out.write(board.stored(row))
        table = board.markdown(rows, board.our_notes(profile.settings))
        return dg.Output(
            out.manifest,
            metadata={
                "table": dg.MetadataValue.md(table),
                "chart": dg.MetadataValue.md(f"![leaderboard]({board.bar_chart_png(rows)})"),
                "models": len({r["model"] for r in rows}),
            },
        )

    assets = [benchmark_items, benchmark_predictions, benchmark_scores, leaderboard]
    jobs = [
        dg.define_asset_job("load_benchmarks", selection=[benchmark_items], description="Read one benchmark's items."),
        dg.define_asset_job(
            "evaluate_model",
            selection=[benchmark_predictions, benchmark_scores],
            description="One model's predictions and scores on one benchmark.",
            tags=gpu_run_tags("evaluation"),
        ),
        dg.define_asset_job("update_leaderboard", selection=[leaderboard], description="The leaderboard from the latest scores."),
    ]
    automation = automation_sensor(
        "leaderboard_automation",
        target=dg.AssetSelection.assets(leaderboard, benchmark_items),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=config.dagster.automation_interval_s,
        description=(
            "Loads each benchmark's items when missing (decontamination reads them) and rebuilds the leaderboard whenever a benchmark score is materialized."
        ),
    )
    return dg.Definitions(assets=assets, jobs=jobs, sensors=[automation])


def _model(profile: ProfileResource, storage: StorageResource, name: str) -> tuple[str, bool, str | None]:
    """(where the model is, whether that is on the storage root, revision) for a model partition."""
    if name in TRAINED_MODELS:
        st = storage.storage
        if not st.exists(st.manifest_path(name, None)):
            raise dg.Failure(f"{name} is not trained yet: materialize it first", allow_retries=False)
        model = st.read_manifest(name, None)
        assert isinstance(model, ModelManifest)  # a training asset's manifest
        return model.model_url, True, None
    ref = profile.settings.models[name]
    return ref.id, False, ref.revision
