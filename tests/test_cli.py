"""The ways people drive the pipeline from a shell: ``asagi demo`` (the README's main
command), ``asagi sync``/``report``, a CLI backfill run by ``dagster-daemon``, and the
inbox sensor's backfill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from assets.web import INGEST_ASSETS
from tests.conftest import ASAGI, asagi_timed, default_signals, free_port, running_daemon, serving_sample, write_profile
from tests.dagster_ui import graphql, wait_until_served

REPO = Path(__file__).resolve().parent.parent


def asagi(env, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*ASAGI, *args], env=env, cwd=REPO, capture_output=True, text=True, check=check, timeout=timeout)


def test_demo_on_the_shipped_profile_then_sync_and_report(finished_demo):
    # As the README's "Using it" does: the sample's image server is already running (the fixture).
    local_env, demo, silence = finished_demo.env, finished_demo.output, finished_demo.longest_silence_s
    assert "are already served at http://127.0.0.1:" in demo  # its server, not a port clash
    for line in (
        "web_ingest sample-00002.warc: success",
        "filtered_splits sample-00002.warc: success",
        "dataset_ingest sample-vqa-en: success",
        "synthesized_corpora sample-00002.warc: success",
        "translated_datasets sample-captions-en: success",
        "translated_datasets sample-vqa-en: success",
        "vlm_training: success",
        "load_benchmarks japanese-heron-bench: success",
        "evaluate_model japanese-heron-bench|vlm_stage2: success",
        "evaluate_model ja-vg-vqa-500|vlm_stage2: success",
        "evaluate_model ja-vlm-bench-in-the-wild|vlm_stage2: success",
        "update_leaderboard: success",
    ):
        assert line in demo, demo[-3000:]
    # It talks while it works: progress lines from inside the runs (training steps with
    # their loss, benchmark items answered), and never 15 s without a line.
    assert re.search(r"^  stage1 6/6 steps \([0-9.]+/s\), loss [0-9.]+$", demo, re.M), demo[-3000:]
    assert re.search(r"^  japanese-heron-bench\|vlm_stage2 103/103 items", demo, re.M)
    assert silence <= 15, (silence, demo[-3000:])
    # Only warnings that concern the user: no library notices (Dagster's preview warnings,
    # transformers' load reports, torchrun's thread banner).
    for notice in ("PreviewWarning", "SupersessionWarning", "LOAD REPORT", "UNEXPECTED", "OMP_NUM_THREADS"):
        assert notice not in demo, (notice, demo[-3000:])
    # It ends with the time of each phase and where everything is.
    [times] = [line for line in demo.splitlines() if line.startswith("phase times: ")]
    assert all(f"{phase} " in times for phase in ("ingest", "datasets", "filter", "synthesize", "train", "evaluate"))
    where = demo[demo.index("where everything is:") :]
    for expected in ("storage root", "DuckDB file", "vlm_stage1", "vlm_stage2", "leaderboard", "dagster dev"):
        assert expected in where, where
    query = next(line for line in where.splitlines() if "try: python -c" in line).split("try: ", 1)[1]
    shown = subprocess.run(query, shell=True, capture_output=True, text=True, env=local_env, timeout=60)
    assert shown.returncode == 0 and "screened_pairs" in shown.stdout, shown.stderr  # the suggested query works
    # The tiny random generators' corpora are nearly empty, and the demo and the report say why in one line.
    [note] = [line for line in demo.splitlines() if line.startswith("synthesized corpora: ")]
    assert "rows accepted" in note and "builtin tiny random models" in note
    assert note in asagi(local_env, "report").stdout.splitlines()
    report = json.loads(asagi(local_env, "report", "--shards", "--json").stdout)
    # 8 per-shard assets and 4 corpora x 3 shards, 3 assets x 3 datasets, 2 translations,
    # the two indexes and the document reference, the two stage mixtures; 3 benchmarks'
    # items, predictions and scores, and the leaderboard.
    assert len(report) == 36 + 9 + 2 + 3 + 2 + 3 * 3 + 1
    for row in report:
        assert row["rows_in"] == row["rows_out"] + row["rows_rejected"], row
        assert sum(row["rejected_by_reason"].values()) == row["rows_rejected"]
    by_key = {(r["asset"], r["partition"]): r for r in report}
    assert by_key[("pair_images", "sample-00001.warc.gz")]["rejected_by_reason"] == {"http_status": 1, "x_robots_noai": 1}
    # The blog's banner, icon, placeholder and English-only alt each fail their rule.
    screened = by_key[("screened_pairs", "sample-00000.warc.gz")]
    assert screened["rejected_by_reason"] == {"ascii_only": 1, "aspect_ratio": 1, "image_size": 1, "monochrome": 1}
    assert {r["rule"]: r["passed"] for r in screened["rule_stats"]} == {
        "text_length": 9,
        "ascii_only": 8,
        "harmful_keywords": 8,
        "image_size": 7,
        "aspect_ratio": 6,
        "monochrome": 5,
    }
    assert asagi(local_env, "sync").stdout.strip() == "no new shards"
    # A benchmark photo, an exact duplicate across shards, a chart; the sample dataset
    # holds most of the blog's photos (scikit-image's), so it keeps them and the web
    # copies go as near duplicates (the dataset is the better-documented origin).
    filtered = Counter()
    for row in report:
        if row["asset"] == "filtered_pairs":
            filtered.update(row["rejected_by_reason"])
    assert filtered == {"benchmark_overlap": 1, "near_duplicate_image": 7, "duplicate_image": 1, "document_image": 1}
    # Synthesis ran on what survived, with the tiny random models: every item accounted
    # for, each rejection with a validator's reason (random text is rarely English, and
    # a Japanese-looking ramble is not a translation of its source).
    english = [by_key[("english_captions", shard)] for shard in ("sample-00000.warc.gz", "sample-00001.warc.gz", "sample-00002.warc")]
    assert sum(r["rows_in"] for r in english) == sum(by_key[("filtered_pairs", r["partition"])]["rows_out"] for r in english) > 0
    translated = [by_key[("translated_pairs", name)] for name in ("sample-captions-en", "sample-vqa-en")]
    assert [r["rows_in"] for r in translated] == [3, 3]
    reasons = {
        "not_english",
        "not_japanese",
        "too_short",
        "too_long",
        "prompt_echo",
        "bad_format",
        "length_mismatch",
        "mentions_image_text",
        "empty",
        "duplicate_output",
    }
    for row in english + translated:
        assert set(row["rejected_by_reason"]) <= reasons, row
    text = asagi(local_env, "report", "--shards").stdout
    assert "translated_pairs" in text and "monochrome=5/6" in text
    # The mixtures drew one text per image from alt texts, reference texts and the
    # datasets (synthesis gave little), and both stages trained on them.
    for stage in ("stage1", "stage2"):
        mixture = by_key[(f"{stage}_mixture", "all")]
        assert mixture["rows_out"] > 0 and set(mixture["rejected_by_reason"]) <= {"other_text_drawn", "empty_text"}
        assert re.search(rf"vlm_{stage} +6 steps on {mixture['rows_out']} examples, final loss \d", text), text[-600:]
    _assert_training_metadata(local_env)
    _assert_evaluation(local_env, demo, by_key)
    # The same stage as a job for a multi-node run (k8s/training/): starts from stage 1's model.
    job_path = Path(local_env["DAGSTER_HOME"]).parent / "job2.json"
    asagi(local_env, "train", "--write-job", "stage2", "--to", str(job_path))
    job = json.loads(job_path.read_text())
    assert job["stage"] == "stage2" and job["start_from"].endswith("vlm_stage1/all/model")
    assert job["mixture_url"].endswith("stage2_mixture/all/data.parquet")
    # A second demo with nothing changed redoes nothing: each of its 29 runs (26, and the
    # benchmarks loaded before filtering again before evaluating) is skipped as
    # unchanged, and the trained model is the one it was (its time: benchmarks/bench_demo.py).
    model = Path(local_env["ASAGI_CONFIG"]).parent / ".asagi" / "data" / "vlm_stage2" / "all" / "model" / "config.json"
    trained_at = model.stat().st_mtime_ns
    again, _, _ = asagi_timed(local_env, "demo")
    assert again.count(": unchanged (") == 29 and ": success (" not in again, again[-3000:]
    assert model.stat().st_mtime_ns == trained_at


def _assert_evaluation(env, demo_output: str, by_key: dict) -> None:
    """The trained tiny model scored on the three stand-ins, all 103 real Heron-Bench
    questions included, and the leaderboard printed with it beside the published models."""
    assert by_key[("benchmark_items", "japanese-heron-bench")]["rows_out"] == 103
    assert by_key[("benchmark_items", "ja-vg-vqa-500")]["rows_out"] == 6  # 3 images x 2 QAs, flattened
    for name in ("japanese-heron-bench", "ja-vlm-bench-in-the-wild", "ja-vg-vqa-500"):
        items = by_key[("benchmark_items", name)]["rows_out"]
        assert by_key[("benchmark_predictions", f"{name}|vlm_stage2")]["rows_out"] == items
        assert by_key[("benchmark_scores", f"{name}|vlm_stage2")]["rows_out"] == items
    root = Path(env["ASAGI_CONFIG"]).parent / ".asagi" / "data"
    lines = (root / "benchmark_predictions" / "japanese-heron-bench|vlm_stage2" / "prediction.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(int(json.loads(line)["question_id"]) for line in lines) == list(range(103))
    assert re.search(r"^\| Heron \| ROUGE-L \| - \|  \|  \|  \|  \|  \| \d+\.\d \|$", demo_output, re.M), demo_output[-2000:]
    assert "| benchmark | metric | judge | Asagi-2B |" in demo_output and "| vlm_stage2 (ours) |" in demo_output
    assert "Ours: vlm_stage2, this project: the tiny demo model (random weights" in demo_output


def _assert_training_metadata(env) -> None:
    """What the UI shows for vlm_stage2: the loss curve (a PNG) and the streamed metrics."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("vlm_stage2"))
        metadata = event.asset_materialization.metadata
    assert metadata["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert re.fullmatch(r"[0-9.]+ [▁▂▃▄▅▆▇█]{6} [0-9.]+ \(6 reports, low [0-9.]+\)", metadata["loss"].value), metadata["loss"].value
    steps = [m["step"] for m in metadata["metrics"].value]
    assert steps == list(range(1, 7))
    assert all(m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1 for m in metadata["metrics"].value)
    # Numbers for reading: four significant digits.
    shown = [metadata[k].value for k in ("final_loss", "tokens_per_s", "mfu")] + [v for m in metadata["metrics"].value for v in m.values()]
    assert all(float(f"{v:.4g}") == v for v in shown if isinstance(v, float)), shown


def test_bad_profile_is_a_clear_cli_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\nstorage: {root: /tmp/x, rooot: 1}\n")
    result = subprocess.run([*ASAGI, "sync"], env={**os.environ, "ASAGI_CONFIG": str(bad)}, capture_output=True, text=True)
    assert result.returncode == 1
    assert "storage.rooot: unknown key" in result.stderr and "Traceback" not in result.stderr


SHARDS = 20  # the sample's 3, and 17 copies of them under new names


def test_cli_backfill_of_all_shards_through_the_daemon(cli_env, tmp_path):
    """The README's backfill at crawl scale: 20 shards synced, `asagi backfill`,
    `dagster-daemon run`: the ingest runs take 8 shards each (the default shards_per_run),
    and the automation then rebuilds the indexes and filters every shard."""
    asagi(cli_env, "sample")
    inbox = tmp_path / "inbox"
    originals = sorted(inbox.glob("sample-*"))
    for n in range(SHARDS - len(originals)):
        source = originals[n % len(originals)]
        (inbox / source.name.replace("sample-", f"copy{n:02d}-")).write_bytes(source.read_bytes())
    assert asagi(cli_env, "sync").stdout.count("added ") == SHARDS
    with serving_sample(cli_env):
        assert f"{SHARDS} shards in runs of up to 8" in asagi(cli_env, "backfill").stdout
        with running_daemon(cli_env):
            statuses = _wait_for_filtered(cli_env, tmp_path / "data", SHARDS, deadline_s=900)
    assert statuses and set(statuses) == {"SUCCESS"}, statuses
    ingest_runs = json.loads(subprocess.run([sys.executable, "-c", _INGEST_RUNS], env=cli_env, capture_output=True, text=True, check=True).stdout)
    assert sorted(ingest_runs) == [4, 8, 8], ingest_runs  # shards per ingest run: 20 shards in 3 runs, not 20
    report = json.loads(asagi(cli_env, "report", "--shards", "--json").stdout)
    shards = {p.name for p in inbox.iterdir()}
    for asset in ("web_documents", "image_text_pairs", "pair_images", "screened_pairs", "filtered_pairs"):
        assert {r["partition"] for r in report if r["asset"] == asset} == shards, asset


_INGEST_RUNS = """
import json, dagster as dg
instance = dg.DagsterInstance.get()
registered = instance.get_dynamic_partitions("warc_shards")
sizes = []
for run in instance.get_runs(filters=dg.RunsFilter(tags={"asagi/requested_by": "asagi backfill"})):
    start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
    sizes.append(registered.index(end) - registered.index(start) + 1)
print(json.dumps(sizes))
"""


def test_files_dropped_in_the_inbox_are_ingested_by_the_sensors_backfill(cli_env, tmp_path):
    """What a user with `dagster dev` running sees: new WARC files are registered by the
    inbox sensor and ingested by the one backfill it asks the daemon for, in runs of up to
    shards_per_run shards with every per-shard asset in them, and each shard its own
    materialization of each asset, with its own counts."""
    profile = Path(cli_env["ASAGI_CONFIG"])
    settings = yaml.safe_load(profile.read_text(encoding="utf-8"))
    settings["sources"]["web"]["shards_per_run"] = 2
    profile.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    asagi(cli_env, "sample")
    shards = sorted(p.name for p in (tmp_path / "inbox").iterdir())
    assert len(shards) == 3
    with serving_sample(cli_env), running_daemon(cli_env):
        backfills = _wait_for_backfills(cli_env, deadline_s=600)
    [(status, requested_by, targeted, runs, materialized)] = backfills
    assert (status, requested_by, targeted) == ("COMPLETED_SUCCESS", "warc_inbox_sensor", shards)
    assert sorted(tuple(run_shards) for run_shards, _, _ in runs) == [tuple(shards[:2]), tuple(shards[2:])]  # 2 runs, not 3
    assert all(run_status == "SUCCESS" and assets == sorted(INGEST_ASSETS) for _, run_status, assets in runs), runs
    data = tmp_path / "data"
    for asset in INGEST_ASSETS:
        for shard in shards:  # one materialization per shard, with that shard's own figures
            manifest = json.loads((data / asset / shard / "_manifest.json").read_text())
            assert materialized[asset][shard] == [manifest["rows_out"], True], (asset, shard)


_BACKFILLS = """
import json, dagster as dg
instance = dg.DagsterInstance.get()
registered = instance.get_dynamic_partitions("warc_shards")
def shards(run):
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
    return registered[registered.index(start) : registered.index(end) + 1]
out = []
for b in instance.get_backfills():
    if b.tags.get("asagi/requested_by") != "warc_inbox_sensor":
        continue  # the re-filter sensor's, once the index has the shards
    subset = b.asset_backfill_data.target_subset.partitions_subsets_by_asset_key[dg.AssetKey("web_documents")]
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": b.backfill_id}))
    materialized = {}
    for asset in ASSETS:
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            m = record.asset_materialization
            materialized.setdefault(asset, {}).setdefault(m.partition, [m.metadata["rows_out"].value, m.metadata["rows_accounted"].value])  # newest first
    out.append([b.status.value, b.tags.get("asagi/requested_by"), sorted(subset.get_partition_keys()),
                [[shards(r), r.status.value, sorted(k.to_user_string() for k in r.asset_selection or ())] for r in runs], materialized])
print(json.dumps(out))
""".replace("ASSETS", repr(list(INGEST_ASSETS)))


def _wait_for_backfills(env, deadline_s: float) -> list:
    """The inbox sensor's backfills, once there is one and none is still running."""
    deadline = time.monotonic() + deadline_s
    backfills = []
    while time.monotonic() < deadline:
        backfills = json.loads(subprocess.run([sys.executable, "-c", _BACKFILLS], env=env, capture_output=True, text=True, check=True).stdout)
        if backfills and all(status not in ("REQUESTED", "CANCELING") for status, *_ in backfills):
            break
        time.sleep(3)
    return backfills


def _wait_for_filtered(env, data_root, shards: int, deadline_s: float) -> list[str]:
    """Run statuses once every shard has filtered pairs and no run is unfinished."""
    script = "import dagster as dg; print(' '.join(sorted(r.status.value for r in dg.DagsterInstance.get().get_runs())))"
    deadline = time.monotonic() + deadline_s
    statuses: list[str] = []
    while time.monotonic() < deadline:
        statuses = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split()
        filtered = list((data_root / "filtered_pairs").glob("*/_manifest.json"))
        if len(filtered) == shards and all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses):
            break
        if "FAILURE" in statuses:
            break
        time.sleep(3)
    return statuses


def test_dagster_validate_and_dev_find_the_project_with_no_flags(cli_env):
    """workspace.yaml and [tool.dagster] make the repo root a Dagster project."""
    validate = subprocess.run(["dagster", "definitions", "validate"], env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert validate.returncode == 0, validate.stderr[-2000:]
    port = free_port()
    dev = subprocess.Popen(
        ["dagster", "dev", "--port", str(port)],
        env=cli_env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_signals,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(url, dev)
        assets = {"/".join(n["assetKey"]["path"]) for n in graphql(url, "{ assetNodes { assetKey { path } } }")["assetNodes"]}
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=60)
    assert {"web_documents", "pair_images", "screened_pairs", "image_hash_index", "benchmark_image_index", "filtered_pairs"} <= assets


def test_a_wrong_or_missing_shard_is_one_line_before_any_work(cli_env):
    """A user error says what is valid and what to run, in one line, and nothing starts:
    `filter` does not rebuild the indexes first."""
    empty = asagi(cli_env, "ingest", check=False)
    assert empty.returncode == 1 and empty.stderr.strip().splitlines() == [
        "Error: no registered shards: `asagi sync` registers the inbox's files (`asagi sample` writes the sample's)"
    ]
    asagi(cli_env, "sample")
    asagi(cli_env, "sync")
    for command in (["ingest"], ["filter"], ["backfill"]):
        wrong = asagi(cli_env, *command, "--partition", "does-not-exist.warc.gz", check=False)
        lines = wrong.stderr.strip().splitlines()
        assert wrong.returncode == 1 and len(lines) == 1, (command, wrong.stderr[-2000:])
        assert lines[0].startswith("Error: not a registered shard: does-not-exist.warc.gz; 3 shards are registered (e.g. sample-00000.warc.gz")
        assert "`asagi sync`" in lines[0]
    runs = subprocess.run(
        [sys.executable, "-c", "import dagster as dg; print(len(dg.DagsterInstance.get().get_runs()))"], env=cli_env, capture_output=True, text=True, check=True
    )
    assert runs.stdout.strip() == "0"  # no index was rebuilt, nothing ran


def test_a_rerun_skips_what_is_unchanged_and_runs_what_changed(cli_env):
    """A shard runs again when its file changed or its outputs are gone, or with --rerun;
    otherwise it is skipped, naming the run it is unchanged since."""
    profile = yaml.safe_load(Path(cli_env["ASAGI_CONFIG"]).read_text())
    inbox, root = Path(profile["sources"]["web"]["inbox"]), Path(profile["storage"]["root"])
    asagi(cli_env, "sample")
    asagi(cli_env, "sync")
    with serving_sample(cli_env):
        first = asagi(cli_env, "ingest").stdout
        assert first.count(": success (") == 3, first
        [run_of_0] = re.findall(r"web_ingest sample-00000.warc.gz: success \(1/3, [0-9.]+ s, run ([0-9a-f-]+)\)", first)
        changed = inbox / "sample-00001.warc.gz"
        os.utime(changed, (time.time() + 10, time.time() + 10))  # the file changed (its fingerprint: size and change time)
        (root / "screened_pairs" / "sample-00002.warc" / "_manifest.json").unlink()  # an output gone
        second = asagi(cli_env, "ingest").stdout
        assert f"web_ingest sample-00000.warc.gz: unchanged (1/3, same inputs as run {run_of_0}), skipped" in second, second
        assert "web_ingest sample-00001.warc.gz: success" in second and "web_ingest sample-00002.warc: success" in second
        third = asagi(cli_env, "--rerun", "ingest", "--partition", "sample-00000.warc.gz").stdout
        assert "web_ingest sample-00000.warc.gz: success" in third


def test_s3_without_credentials_or_endpoint_is_one_line_before_any_work(tmp_path):
    profile = tmp_path / "s3.yaml"
    port = free_port()  # nothing listens there
    profile.write_text(
        yaml.safe_dump(
            {
                "profile": "s3",
                "storage": {"root": "s3://asagi/root", "s3": {"endpoint_url": f"http://127.0.0.1:{port}"}},
                "sources": {"web": {"inbox": str(tmp_path / "inbox")}},
                "dagster": {"home": str(tmp_path / "home")},
            }
        )
    )
    (tmp_path / "inbox").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    for command in ("sync", "report", "ingest"):
        result = subprocess.run([*ASAGI, "--config", str(profile), command], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and result.stderr.strip().splitlines() == [
            "Error: no S3 credentials for the profile's s3:// paths: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ], (command, result.stderr[-2000:])
    env.update(AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
    result = subprocess.run([*ASAGI, "--config", str(profile), "sync"], env=env, capture_output=True, text=True, timeout=300)
    [line] = result.stderr.strip().splitlines()
    assert result.returncode == 1 and line.startswith(f'Error: cannot reach S3: Could not connect to the endpoint URL: "http://127.0.0.1:{port}/'), line
    assert not (tmp_path / "home").exists()  # failed before the instance was made


def test_version_and_config_option(cli_env, tmp_path):
    assert asagi(cli_env, "--version").stdout.strip() == "asagi, version 0.1.0"
    (tmp_path / "other").mkdir()
    other = write_profile(tmp_path / "other", sample={"image_server_port": free_port()})
    env = {k: v for k, v in cli_env.items() if k != "ASAGI_CONFIG"}
    written = asagi(env, "--config", str(other), "sample")
    assert str(tmp_path / "other" / "inbox") in written.stdout  # the --config profile, not the default
    missing = asagi(env, "--config", str(tmp_path / "nope.yaml"), "sync", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_wrong_dataset_or_model_is_one_line_naming_the_choices(local_env):
    dataset = asagi(local_env, "datasets", "--partition", "nope", check=False)
    assert dataset.returncode == 1 and dataset.stderr.strip().splitlines() == [
        "Error: not a dataset of sources.datasets: nope; choose from sample-captions, sample-captions-en, sample-vqa-en"
    ]
    model = asagi(local_env, "evaluate", "--model", "nope", check=False)
    assert model.returncode == 1 and model.stderr.strip().splitlines() == ["Error: not a model of evaluation.models: nope; choose from vlm_stage2"]
    benchmark = asagi(local_env, "evaluate", "--benchmark", "heron", check=False)
    assert benchmark.returncode == 1 and benchmark.stderr.strip().splitlines() == [
        "Error: not a benchmark of evaluation.benchmarks: heron; choose from ja-vg-vqa-500, ja-vlm-bench-in-the-wild, japanese-heron-bench"
    ]
    assert "evaluate" in asagi(local_env, "demo", "--help").stdout
