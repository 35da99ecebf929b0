"""The Quick start's `mesh dev`: demo data, then the Dagster UI with every domain loaded.

Starts the real `dagster dev` (webserver, daemon, one code server per domain) on a loopback port in
its own process group, asks its GraphQL API what it loaded, and ends the whole group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


ASSETS = """
{ repositoryOrError(repositorySelector: {repositoryLocationName: "policies", repositoryName: "__repository__"}) {
    ... on Repository { assetNodes { assetKey { path } isMaterializable } } } }
"""
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""


def test_mesh_dev_serves_every_domain(tmp_path):
    """`mesh dev` loads every domain, says so as it happens, and the daemon's runs send OpenLineage events."""
    port = free_port()
    env = {**os.environ, "MESH_HOME": str(tmp_path / "home")}
    for var in ("DAGSTER_HOME", "MESH_LAKE", "MESH_SOURCES", "MESH_WORKSPACE", "MESH_DOMAINS", "MESH_PRIVACY_LEDGER"):
        env.pop(var, None)  # a new user's shell: everything under MESH_HOME, whatever earlier tests exported
    for var in [k for k in env if k.startswith(("OPENLINEAGE", "MESH_LINEAGE"))]:
        env.pop(var)
    log = tmp_path / "mesh-dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mesh_platform.cli", "dev", "--scale", "0.1", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
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
        assert statuses == {d: "RepositoryLocation" for d in ("policies", "claims", "customer_care", "fraud", "analytics")}, (entries, log.read_text())
        assert (tmp_path / "home" / "sources" / "SIMULATION.json").exists()
        assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()

        # a run launched through Dagster (as from the UI): the daemon runs it, the domain's sensor sends its lineage
        nodes = graphql(port, ASSETS)["repositoryOrError"]["assetNodes"]
        selection = [{"path": n["assetKey"]["path"]} for n in nodes if n["isMaterializable"]]
        params = {"selector": {"repositoryLocationName": "policies", "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
                               "assetSelection": selection}, "runConfigData": {}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": LAUNCH, "variables": {"params": params}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            launched = json.loads(response.read())["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        events_file = tmp_path / "home" / "lineage" / "events.jsonl"
        emitted: list[dict] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(emitted) < 2:
            if events_file.exists():
                emitted = [e for e in map(json.loads, events_file.read_text().splitlines()) if e["run"]["runId"] == run_id]
            time.sleep(3)
        assert [e["eventType"] for e in emitted] == ["START", "COMPLETE"], log.read_text()[-3000:]
        assert emitted[-1]["job"]["name"] == "policies.assets"
        assert {o["facets"]["mesh"]["assetKey"] for o in emitted[-1]["outputs"]} >= {"policies/policies", "policies/policyholders"}

        printed = log.read_text()
        assert "ready in" in printed and f"http://127.0.0.1:{port}" in printed, printed
        assert all(f"{d} loaded" in printed for d in statuses), printed
        assert "dev_command" not in printed and "SupersessionWarning" not in printed
        assert " - DEBUG - " not in printed  # runs print INFO and above; every event is in the UI
        assert " - INFO - " not in printed, printed  # ... and the platform logs nothing at INFO: warning level it is
        # the hint names a `mesh` that runs in this shell: plain `mesh` only when that is the one on PATH
        here = Path(sys.executable).parent / "mesh"
        on_path = shutil.which("mesh", path=env["PATH"])
        mesh = "mesh" if on_path and Path(on_path).resolve() == here.resolve() else (str(here) if here.exists() else f"{sys.executable} -m mesh_platform.cli")
        assert f"materialize everything with `{mesh} materialize` in another shell" in printed, printed
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
