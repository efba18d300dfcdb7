"""The inbox automation on PostgreSQL, the instance storage of a cluster (the Helm
chart's), against a real server the test starts: registration beyond SQLite's variable
limit, the sensor's tick through the daemon's own code path, and the re-sync's view of an
unfinished backfill."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration

from asagi_dagster.config import load_config
from asagi_dagster.definitions import build_definitions
from tests.conftest import PROJECT, backfill_shards, resync_tick, write_profile
from tests.postgres_server import postgres_server

CHART_VALUES = PROJECT / "k8s" / "helm" / "values.yaml"


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_home(tmp_path, postgres_url, monkeypatch):
    """DAGSTER_HOME whose dagster.yaml points at a fresh database, written as the Helm
    chart renders it (postgres_db with the chart's scheme)."""
    import psycopg2

    database = f"asagi_{tmp_path.name.lower().replace('-', '_')}"[:60]
    connection = psycopg2.connect(postgres_url)
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction only
    connection.cursor().execute(f"CREATE DATABASE {database}")
    connection.close()
    host_port = postgres_url.split("@")[1].split("/")[0]
    chart = yaml.safe_load(CHART_VALUES.read_text())["postgresql"]
    storage = {
        "username": "dagster",
        "hostname": host_port.split(":")[0],
        "port": int(host_port.split(":")[1]),
        "db_name": database,
        "scheme": chart["postgresqlScheme"],
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "storage": {"postgres": {"postgres_db": storage}}}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def many_shards(inbox: Path, first: int, count: int) -> list[str]:
    inbox.mkdir(parents=True, exist_ok=True)
    names = [f"crawl-{i:06d}.warc.gz" for i in range(first, first + count)]
    for name in names:
        (inbox / name).touch()
    return names


def test_sync_registers_40k_shards_on_postgres(tmp_path, postgres_home, monkeypatch):
    from asagi_cli.main import _sync

    profile = write_profile(tmp_path)
    names = many_shards(tmp_path / "inbox", 0, 40_002)
    config = load_config(profile)
    assert sorted(_sync(config)) == names
    assert _sync(config) == []  # registered once
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert sorted(instance.get_dynamic_partitions("warc_shards")) == names


def test_sensor_tick_and_resync_on_postgres(tmp_path, postgres_home, monkeypatch):
    profile = write_profile(tmp_path)
    monkeypatch.setenv("ASAGI_CONFIG", str(profile))
    inbox = tmp_path / "inbox"
    names = many_shards(inbox, 0, 3_000)
    target = ModuleTarget(module_name="asagi_dagster.definitions", attribute="defs", working_directory=str(PROJECT), location_name="asagi")
    with dg.DagsterInstance.get() as instance, create_test_daemon_workspace_context(target, instance) as workspace:
        # The daemon's own sensor iteration: the tick runs in a code server, as in a deployment.
        list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
        [backfill] = instance.get_backfills()
        assert backfill.tags["asagi/requested_by"] == "warc_inbox_sensor"
        assert backfill_shards(backfill.asset_backfill_data.target_subset) == names
        assert sorted(instance.get_dynamic_partitions("warc_shards")) == names
        # Its backfill unfinished, the re-sync asks for nothing; once it ended, for the
        # shards it did not ingest (here: all of them, no daemon ran its runs).
        defs = build_definitions(str(profile))
        hour = datetime(2026, 11, 1, 1, tzinfo=timezone.utc)
        assert resync_tick(defs, instance, hour) == []
        instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_FAILED))
        assert resync_tick(defs, instance, hour.replace(hour=2)) == names
