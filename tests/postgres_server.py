"""A throwaway PostgreSQL server, as a cluster's Dagster instance storage: Debian's
binaries (scripts/setup.sh installs them), a new cluster in a temporary folder, on a free
loopback port. PostgreSQL refuses to run as root, so as root the cluster belongs to the
``postgres`` user that Debian's package creates."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import free_port


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/setup.sh")
    return os.path.dirname(found[-1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a running server's database; the cluster is gone afterwards."""
    bindir = _bindir()
    base = tempfile.mkdtemp(prefix="asagi-pg-")  # under /tmp: reachable by the postgres user
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = f"{base}/data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(f"{bindir}/initdb", "-D", data, "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        pg(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", f"{base}/server.log", "-w", "start")
        try:
            yield f"postgresql://dagster@127.0.0.1:{port}/postgres"
        finally:
            pg(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
