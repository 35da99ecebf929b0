"""The Quick start's `mesh dev`: demo data, then the Dagster UI with every domain loaded.

Starts the real `dagster dev` (webserver, daemon, one code server per domain) on a loopback port in
its own process group, asks its GraphQL API what it loaded, and ends the whole group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def test_mesh_dev_serves_every_domain(tmp_path):
    port = free_port()
    env = {**os.environ, "MESH_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh_platform.cli", "dev", "--scale", "0.1", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    entries = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                entries = graphql(port, QUERY)["workspaceOrError"]["locationEntries"]
                if len(entries) == 5 and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, TypeError, TimeoutError, OSError):
                pass
            time.sleep(2)
        statuses = {e["name"]: e["locationOrLoadError"]["__typename"] for e in entries}
        output = "" if proc.poll() is None else proc.stdout.read()
        assert statuses == {d: "RepositoryLocation" for d in ("policies", "claims", "customer_care", "fraud", "analytics")}, (entries, output)
        assert (tmp_path / "home" / "sources" / "SIMULATION.json").exists()
        assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
