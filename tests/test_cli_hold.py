"""While an asagi command runs jobs on an instance, the automations of a `dagster dev` on
the same instance stand aside (assets/cli_hold.py): the automation conditions request
nothing, the sensors skip; a hold left by a killed command goes stale; the CLI clears its
hold when it ends."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from asagi_sample.site import write_sample
from assets.cli_hold import HOLD_FRESH_S, HOLD_KEY, HOLD_LINGER_S, cli_holding, set_hold
from tests.conftest import ASAGI, PROJECT, running_daemon, serving_sample, write_profile

AUTOMATIONS = ("filters_automation", "refilter_sensor", "warc_inbox_sensor")
MISSING_INDEXES = {"benchmark_image_index", "document_image_reference"}  # built when missing (filters_automation)


def requested(defs, instance) -> set[str]:
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(key)}


def test_automations_and_sensors_stand_aside_while_a_fresh_hold_lasts(tmp_path):
    profile = write_profile(tmp_path)
    write_sample(tmp_path / "inbox", tmp_path / "site", "http://127.0.0.1:9")
    defs = build_definitions(str(profile))
    sensor = defs.resolve_sensor_def("warc_inbox_sensor")
    with dg.instance_for_test() as instance:
        assert MISSING_INDEXES <= requested(defs, instance)  # no hold: built when missing

        set_hold(instance, "filter_indexes")
        assert cli_holding(instance).endswith("is running filter_indexes")
        assert requested(defs, instance) == set()
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            skipped = sensor(context)
        assert "is running filter_indexes; the inbox waits" in skipped.skip_message
        assert instance.get_dynamic_partitions("warc_shards") == []  # nothing registered under the hold

        # A command killed on this machine without clearing its hold: released at once.
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
        dead = {"pid": int(gone.stdout), "host": socket.gethostname(), "what": "web_ingest", "renewed_at": time.time()}
        instance.run_storage.set_cursor_values({HOLD_KEY: json.dumps(dead)})
        assert cli_holding(instance) is None
        # One killed on another machine: stale after HOLD_FRESH_S.
        elsewhere = {"pid": 1, "host": "another-host", "what": "web_ingest", "renewed_at": time.time() - 5}
        instance.run_storage.set_cursor_values({HOLD_KEY: json.dumps(elsewhere)})
        assert cli_holding(instance).endswith("is running web_ingest")
        stale = {**elsewhere, "renewed_at": time.time() - HOLD_FRESH_S - 1}
        instance.run_storage.set_cursor_values({HOLD_KEY: json.dumps(stale)})
        assert cli_holding(instance) is None
        assert MISSING_INDEXES <= requested(defs, instance)
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            result = sensor(context)
        assert len(instance.get_dynamic_partitions("warc_shards")) == 3 and result.run_requests


def test_a_command_holds_while_it_runs_and_clears_the_hold_when_it_ends(cli_env):
    subprocess.run([*ASAGI, "sample"], env=cli_env, cwd=PROJECT, check=True, capture_output=True)
    subprocess.run([*ASAGI, "sync"], env=cli_env, cwd=PROJECT, check=True, capture_output=True)
    command = subprocess.Popen([*ASAGI, "ingest"], env=cli_env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        while command.poll() is None:
            seen.append(cli_holding(instance))
            time.sleep(0.2)
        assert command.returncode == 0, command.stdout.read()[-2000:]
        assert any(hold and "is running web_ingest sample-0000" in hold for hold in seen), seen
        ended = cli_holding(instance)  # marked ended at exit, and lingers for a next command
        assert ended and "ended web_ingest" in ended, ended
        assert cli_holding(instance, now=time.time() + HOLD_LINGER_S + 1) is None


_RUNS = """
import json, sys, dagster as dg
instance = dg.DagsterInstance.get()
runs = instance.get_runs()
since = float(sys.argv[1])
print(json.dumps({
    "ticks_since": {state.instigator_name: len(instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since))
                    for state in instance.all_instigator_state()},
    "cli": sum(1 for r in runs if "asagi/inputs" in r.tags),
    "others": sorted({r.tags.get("dagster/sensor_name") or r.tags.get("asagi/requested_by") or r.job_name for r in runs if "asagi/inputs" not in r.tags}),
    "backfills": sorted(b.tags.get("asagi/requested_by", "") for b in instance.get_backfills()),
    "index_by_automation": sum(1 for r in runs if "asagi/inputs" not in r.tags and r.status.value == "SUCCESS"
                               and "image_hash_index" in {k.to_user_string() for k in r.asset_selection or ()}),
}))
"""


def test_beside_a_running_daemon_the_clis_runs_are_not_done_again_by_the_automations(cli_env, tmp_path):
    """`asagi ingest` and `asagi filter` with `dagster-daemon run` (what `dagster dev`
    starts) on the same instance: the only runs are the CLI's, during and after it; then
    a file dropped in the inbox is ingested by the sensor's backfill and indexed by the
    filters automation, so both were live all along."""
    import shutil

    profile = yaml.safe_load(Path(cli_env["ASAGI_CONFIG"]).read_text())
    profile["sources"]["web"]["sensor_interval_s"] = 5
    # Every 5 s: a tick between `asagi ingest` and `asagi filter` (two commands) would act
    # were it not for the hold's linger (HOLD_LINGER_S).
    profile["dagster"]["automation_interval_s"] = 5
    Path(cli_env["ASAGI_CONFIG"]).write_text(yaml.safe_dump(profile, allow_unicode=True))

    def runs(since: float = 0.0) -> dict:
        command = [sys.executable, "-c", _RUNS, str(since)]
        return json.loads(subprocess.run(command, env=cli_env, capture_output=True, text=True, check=True).stdout)

    subprocess.run([*ASAGI, "sample"], env=cli_env, cwd=PROJECT, check=True, capture_output=True)
    subprocess.run([*ASAGI, "sync"], env=cli_env, cwd=PROJECT, check=True, capture_output=True)  # before the daemon: its first tick comes at once
    with serving_sample(cli_env):
        # The daemon starts once the command holds: its first tick comes at once, and one
        # before any command would rightly build the missing indexes itself.
        output = tmp_path / "ingest.log"
        with output.open("w") as log:
            ingest = subprocess.Popen([*ASAGI, "ingest"], env=cli_env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
        with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
            while not cli_holding(instance):
                assert ingest.poll() is None, output.read_text()[-2000:]
                time.sleep(0.2)
        with running_daemon(cli_env):
            assert ingest.wait(timeout=600) == 0, output.read_text()[-2000:]
            subprocess.run([*ASAGI, "filter"], env=cli_env, cwd=PROJECT, check=True, capture_output=True, timeout=600)
            ended = time.time() + HOLD_LINGER_S  # the automations stand aside until then
            deadline = time.monotonic() + 180 + HOLD_LINGER_S
            while min(runs(ended)["ticks_since"].get(name, 0) for name in AUTOMATIONS) < 2:  # two ticks each after the hold ended
                assert time.monotonic() < deadline, runs(ended)["ticks_since"]
                time.sleep(5)
            after_cli = runs()
            assert after_cli["others"] == [] and after_cli["backfills"] == [], after_cli
            assert after_cli["cli"] == 3 + 1 + 3  # ingest per shard; the indexes; filtered splits per shard (no datasets here)

            inbox = Path(profile["sources"]["web"]["inbox"])
            shutil.copy(inbox / "sample-00001.warc.gz", inbox / "dropped-00001.warc.gz")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not runs()["index_by_automation"]:
                time.sleep(5)
            later = runs()
            assert later["index_by_automation"] >= 1 and "warc_inbox_sensor" in later["backfills"], later


def test_a_command_keeps_one_instance_so_one_hold_and_one_renewer(cli_env, monkeypatch):
    """DagsterInstance.get() makes a new instance per call: a command running 90,000 shard
    runs must not start a renewer thread (and an S3 check) per run."""
    from asagi_cli import main

    monkeypatch.setenv("DAGSTER_HOME", cli_env["DAGSTER_HOME"])
    config = load_config(cli_env["ASAGI_CONFIG"])
    first = main._instance(config)
    assert main._instance(config) is first and main._hold(main._instance(config)) is main._hold(first)
