"""Talking to a running Dagster webserver (``dagster dev`` or ``dagster-webserver``) the
way its UI does: GraphQL over HTTP on loopback."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def graphql(url: str, query: str, **variables) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_until_served(url: str, server: subprocess.Popen, log: Path | None = None, deadline_s: float = 180) -> None:
    """Until the webserver at ``url`` serves the code location's repository."""
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"
    tail = (lambda: "\n" + log.read_text()[-3000:]) if log else (lambda: "")
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "the webserver exited:" + tail()
        try:
            if graphql(url, query)["repositoriesOrError"].get("nodes"):
                return
        except (httpx.HTTPError, AssertionError, KeyError, ValueError):
            pass
        time.sleep(2)
    raise AssertionError(f"{url} never served the code location:" + tail())
