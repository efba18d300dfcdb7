"""The Dagster UI as people use it: a real ``dagster-webserver`` on 127.0.0.1 serving the
embedded default. Over GraphQL (what the UI itself calls) every asset, asset check, job,
schedule and sensor is there with its description and group, and a materialization
launched there runs to success. Then headless Chromium (Debian's chromium package,
installed by scripts/setup.sh), driven by Playwright, opens the asset graph page,
expands every group and takes the screenshot shown in the README
(docs/img/asset-graph.png is one such screenshot)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from asagi_dagster.definitions import build_definitions
from tests.conftest import default_signals, free_port
from tests.dagster_ui import graphql, wait_until_served
from tests.test_cli import REPO, asagi

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a headless run as root on a machine with no display and a closed network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture
def webserver(local_env, tmp_path):
    """dagster-webserver on a free loopback port, for the shipped profile in tmp_path; runs
    it launches start at once (DefaultRunCoordinator: no daemon in this test)."""
    home = Path(local_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(  # nux: no "join the community" dialog over the page
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    asagi(local_env, "sample")
    with served_ui(local_env, tmp_path / "webserver.log") as url:
        yield url


@contextmanager
def served_ui(env: dict, log_path: Path) -> Iterator[str]:
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_served(url, server, log_path)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


ASSETS = """{ assetNodes { assetKey { path } description groupName
  assetChecksOrError { ... on AssetChecks { checks { name description } } } } }"""
REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  pipelines { name description } schedules { name description cronSchedule } sensors { name description } } } } }"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
  assetMaterializations { assetKey { path } partition } } } }"""


def test_ui_serves_every_definition_launches_a_materialization_and_renders_the_asset_graph(webserver, local_env, tmp_path):
    defs = build_definitions(local_env["ASAGI_CONFIG"])
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()

    # Every asset with its description and group, and every asset check with its description.
    served = {"/".join(n["assetKey"]["path"]): n for n in graph_nodes(webserver)}
    expected = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert set(served) == set(expected)
    for name, node in expected.items():
        assert served[name]["description"] == node.description and node.description, name
        assert served[name]["groupName"] == node.group_name, name
    served_checks = {(name, c["name"]): c["description"] for name, n in served.items() for c in n["assetChecksOrError"]["checks"]}
    expected_checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert expected_checks and set(served_checks) == expected_checks
    assert all(served_checks.values())

    # Every job, schedule and sensor, with descriptions.
    (repo,) = graphql(webserver, REPOSITORY)["repositoriesOrError"]["nodes"]
    jobs = {j["name"]: j["description"] for j in repo["pipelines"] if not j["name"].startswith("__")}
    assert jobs.keys() == {j.name for j in repository.get_all_jobs() if not j.name.startswith("__")}
    assert all(jobs.values()), jobs
    assert {s["name"]: s["cronSchedule"] for s in repo["schedules"]} == {s.name: s.cron_schedule for s in repository.schedule_defs}
    assert {s["name"] for s in repo["sensors"]} == {s.name for s in repository.sensor_defs}
    assert all(s["description"] for s in repo["schedules"] + repo["sensors"])

    # A materialization launched through GraphQL, as the UI's Materialize button does.
    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["benchmark_items"]}],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "japanese-heron-bench"}]},
    }
    launched = graphql(webserver, LAUNCH, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = _wait_for_run(webserver, launched["run"]["runId"])
    assert run["status"] == "SUCCESS", run
    assert {("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]} == {("benchmark_items", "japanese-heron-bench")}

    # The asset graph page, rendered by a real browser.
    screenshot = tmp_path / "asset-graph.png"
    shown = asset_graph_screenshot(f"{webserver}/asset-groups", screenshot)
    assert {"web_documents", "filtered_pairs", "ja_captions", "vlm_stage2", "leaderboard"} <= shown
    _assert_a_rendered_page(screenshot)


def graph_nodes(url: str) -> list[dict]:
    return graphql(url, ASSETS)["assetNodes"]


def _wait_for_run(url: str, run_id: str, deadline_s: float = 300) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        run = graphql(url, RUN, id=run_id)["runOrError"]
        if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {deadline_s} s: {run}")


def asset_graph_screenshot(page_url: str, png: Path) -> set[str]:
    """Open the global asset graph, expand every group (the UI's Alt+E), screenshot it;
    returns which asset names the rendered page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 2000, "height": 1250})
            page.goto(page_url, wait_until="networkidle", timeout=120_000)
            page.get_by_text("evaluation", exact=True).first.wait_for(timeout=60_000)  # the groups, collapsed
            page.keyboard.press("Alt+KeyE")
            page.get_by_text("leaderboard", exact=True).first.wait_for(timeout=60_000)
            text = page.inner_text("body")  # before zooming out: small nodes drop their labels
            page.get_by_text("Hide navigation").click()  # more room for the graph
            page.mouse.move(1100, 650)
            page.keyboard.down("Control")  # Ctrl+wheel zooms the graph (a plain wheel pans)
            page.mouse.wheel(0, 50)
            page.keyboard.up("Control")
            page.wait_for_timeout(2000)  # the graph's animation
            page.screenshot(path=str(png))
        finally:
            browser.close()
    return {name for name in text.split() if name.isidentifier()}


def _assert_a_rendered_page(png: Path, size: tuple[int, int] | None = (2000, 1250)) -> None:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    assert size is None or image.size == size
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"


# Where the UI test keeps its screenshots; docs/img/ui holds the ones a reviewer looks at
# (ASAGI_UI_SCREENSHOTS=docs/img/ui python3 -m pytest -q tests/test_ui.py refreshes them).
SCREENSHOTS = "ASAGI_UI_SCREENSHOTS"


def test_the_ui_shows_the_demos_data(finished_demo, tmp_path):
    """The pages people look at after `asagi demo`, each kept as a screenshot: the asset
    graph, a partition's metadata, sample rows with their Japanese text, a corpus's
    rejected samples with reasons, the leaderboard and its chart, and vlm_stage2's loss
    curve. Japanese renders with Debian's Noto CJK fonts (scripts/setup.sh)."""
    assert subprocess.run(["fc-list", ":lang=ja"], capture_output=True, text=True).stdout.strip(), "no Japanese font: run scripts/setup.sh"
    env = finished_demo.env
    settings = Path(env["DAGSTER_HOME"]) / "dagster.yaml"  # the demo's instance, as `dagster dev` would open it
    if "nux:" not in settings.read_text():
        settings.write_text(settings.read_text() + "nux:\n  enabled: false\n")
    folder = Path(os.environ.get(SCREENSHOTS) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with served_ui(env, tmp_path / "webserver.log") as url:
        shown = asset_graph_screenshot(f"{url}/asset-groups", folder / "asset-graph.png")
        assert {"web_documents", "filtered_pairs", "vlm_stage2", "leaderboard"} <= shown
        partition = "view=partitions&partition="
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                text = metadata_page(page, f"{url}/assets/screened_pairs?{partition}sample-00000.warc.gz", folder / "partition-metadata.png")
                assert "rule_pass_rates" in text and "rows_accounted" in text and "ascii_only" in text
                rows = metadata_page(page, f"{url}/assets/image_text_pairs?{partition}sample-00000.warc.gz", folder / "sample-rows.png", "sample_rows")
                assert page.get_by_role("dialog").locator("th").first.inner_text() == "alt" and "猫" in rows, rows[:500]
                rejected = metadata_page(
                    page, f"{url}/assets/english_captions?{partition}sample-00002.warc", folder / "corpus-rejections.png", "sample_rejections"
                )
                assert "not_english" in rejected and "output:" in rejected, rejected[:500]
                board = metadata_page(page, f"{url}/assets/leaderboard", folder / "leaderboard.png", "table")
                assert "vlm_stage2 (ours)" in board and "tiny demo model" in board and "Asagi-14B" in board
                metadata_page(page, f"{url}/assets/leaderboard", folder / "leaderboard-chart.png", "chart")
                assert page.locator("img[src^='data:image/png']").count() >= 1
                assert "▁" in metadata_page(page, f"{url}/assets/vlm_stage2", tmp_path / "loss.png", "loss")  # the sparkline, inline
                metadata_page(page, f"{url}/assets/vlm_stage2", folder / "vlm_stage2.png", "loss_curve")
                assert page.locator("img[src^='data:image/png']").count() >= 1
            finally:
                browser.close()
    for png in folder.glob("*.png"):
        _assert_a_rendered_page(png, size=None)


def metadata_page(page, url: str, png: Path, markdown: str | None = None) -> str:
    """Open an asset's page (or a partition's) and screenshot it, showing the Markdown of
    one metadata entry when given: inline where the UI shows it so (short entries), else
    in the dialog its "[Show Markdown]" opens. Returns the text shown: the page's, the
    entry's row, or the dialog's."""
    page.goto(url, wait_until="networkidle", timeout=120_000)
    page.get_by_text("rows_out" if markdown is None else markdown, exact=True).first.wait_for(timeout=60_000)
    if markdown is None:
        page.screenshot(path=str(png))
        return page.inner_text("body")
    row = page.locator("tr", has=page.get_by_text(markdown, exact=True)).last
    if not row.get_by_text("[Show Markdown]").count():
        row.scroll_into_view_if_needed()
        page.screenshot(path=str(png))
        return row.inner_text()
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # images in the Markdown
    page.evaluate("() => document.querySelectorAll('*').forEach(e => { e.scrollTop = 0; e.scrollLeft = 0 })")  # it opens scrolled to its button
    page.screenshot(path=str(png))
    return dialog.inner_text()
