"""Shared fixtures.

The whole test session runs against one throwaway mesh home (lake, simulated sources, Dagster
instance), set in the environment before any domain module is imported, exactly as `mesh` and
`dagster dev` would set it. Tests that need a different environment run a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mesh-test-"))
os.environ["MESH_HOME"] = str(_SESSION_HOME)
for var in ("MESH_LAKE", "MESH_SOURCES", "MESH_DOMAINS", "MESH_WORKSPACE"):
    os.environ.pop(var, None)
os.environ["DAGSTER_HOME"] = str(_SESSION_HOME / "dagster_home")
(_SESSION_HOME / "dagster_home").mkdir(parents=True, exist_ok=True)

TEST_SCALE = 0.5

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
"""Dagster's GraphQL mutation that launches a run, as the UI's Materialize button does."""


def wait_until(predicate, seconds: float, what: str, log: Path | None = None):
    """``predicate()``'s first truthy value, polled for at most ``seconds``; else the test fails,
    saying what it waited for (and the end of ``log``)."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:  # bounded
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {seconds:.0f}s waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def pytest_report_header(config):
    """Say up front how long the run will take, and how to run the fast subset."""
    if "not slow" in (config.getoption("markexpr") or ""):
        return "fast subset: the end-to-end tests marked `slow` are left out"
    return ("the whole suite takes about 15 minutes on two cores (it materializes the mesh, starts dagster dev, "
            "Postgres and an S3 server); `pytest -m \"not slow\"` runs the fast subset")


# The files that take longest, longest first (seconds of a full run on two cores). The suite runs on
# two workers, a file at a time (`--dist loadfile`); with `--no-loadscope-reorder` xdist hands the
# files out in collection order instead of by test count, which put the production stack test (one
# file of five tests, the longest by far) last: the other worker then sat idle for minutes.
LONGEST_FIRST = [
    "test_production_stack.py",  # ~390 s: Postgres, S3, a code server per domain, the daemon
    "test_benchmarks.py",  # ~170 s: every benchmark's quick run
    "test_quickstart_dev.py",  # ~130 s: dagster dev
    "test_partitions.py",
    "test_quotas.py",
    "test_hostile_files.py",
    "test_materialize_queued.py",
    "test_scaffold.py",
    "test_governance.py",
    "test_dbt.py",
    "test_contract_versions.py",
    "test_contract_gate.py",
    "test_delta_ports.py",
    "test_isolation.py",
    "test_mesh_end_to_end.py",
    "test_hostile_env.py",
]


def pytest_collection_modifyitems(config, items):
    """Longest files first (see LONGEST_FIRST); within a file, and for every other file, the order stays."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def mesh_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def settings():
    from mesh_platform.foundations.settings import MeshSettings

    return MeshSettings.from_env()


@pytest.fixture(scope="session", autouse=True)
def dbt_manifests():
    """What `mesh dbt prepare` does at setup: the dbt domains' manifests, parsed once.

    The suite runs in parallel workers (pytest-xdist, pyproject.toml's addopts), each with its own
    mesh home, but the checkout's dbt project is one: the first worker parses it under a lock and
    the others find it prepared."""
    import fcntl
    import hashlib

    name = f"mesh-dbt-prepare-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]}.lock"
    with open(Path(tempfile.gettempdir()) / name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_mesh(["dbt", "prepare"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def sources(settings):
    from mesh_platform.sources.simulation import simulate

    simulate(settings.sources, scale=TEST_SCALE)
    return Path(settings.sources)


@pytest.fixture(scope="session")
def materialized_mesh(sources, settings):
    """The whole demo mesh materialized once, through `mesh materialize` (a real CLI run); its
    ``run_ids`` are the runs it made (other tests of the session add runs to the same instance)."""
    from mesh_platform.mesh.instance import local_instance

    before = set(local_instance(settings).get_run_ids())
    result = run_mesh(["materialize", "--in-process"], env={})
    assert result.returncode == 0, result.stdout + result.stderr
    result.run_ids = set(local_instance(settings).get_run_ids()) - before
    return result


def run_mesh(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `mesh` command line in a subprocess with this session's environment (plus ``env``)."""
    full_env = {**os.environ, **(env or {})}
    if env and "MESH_HOME" in env:
        # a mesh home of its own: paths an earlier test pinned (settings.export()) must not point the
        # child back at the session's sources or lake (`--scale` would regenerate the session's sources)
        for var in ("MESH_LAKE", "MESH_SOURCES", "DAGSTER_HOME", "MESH_PRIVACY_LEDGER"):
            if var not in env:
                full_env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "mesh_platform.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def domains_copy(tmp_path) -> Path:
    """A writable copy of the project (domains + workspace.yaml) to break on purpose."""
    target = tmp_path / "project"
    shutil.copytree(ROOT / "domains", target / "domains", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "workspace.yaml", target / "workspace.yaml")
    shutil.copytree(ROOT / "dbt", target / "dbt", ignore=shutil.ignore_patterns("logs", "*.duckdb", ".user.yml"))
    return target


def copy_env(project: Path) -> dict[str, str]:
    """Environment that makes a subprocess import and discover the copied domains (and this checkout's platform)."""
    return {
        "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
        "MESH_DOMAINS": str(project / "domains"),
        "MESH_WORKSPACE": str(project / "workspace.yaml"),
    }


@pytest.fixture(scope="module")
def s3_server():
    """A loopback S3 server (moto), one per test module."""
    from s3_server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3_lake(s3_server, monkeypatch):
    """A fresh bucket on the module's S3 server, this test's environment pointed at it; the lake URI."""
    import time

    for key, value in s3_server.admin.env(s3_server.endpoint).items():
        monkeypatch.setenv(key, value)
    bucket = f"lake-{time.time_ns()}"
    s3_server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/mesh"
