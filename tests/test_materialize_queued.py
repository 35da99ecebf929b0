"""`mesh materialize` through the instance: runs queued for their code location and launched by a real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from conftest import copy_env, run_mesh


def _env(project, home) -> dict[str, str]:
    return {**copy_env(project), "MESH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
            "MESH_SOURCES": str(home / "sources"), "MESH_LAKE": str(home / "lake"), "MESH_AUTOMATION": "off"}


def test_without_a_daemon_nothing_is_queued(domains_copy, tmp_path):
    env = _env(domains_copy, tmp_path / "home")
    result = run_mesh(["materialize", "--select", "policies", "--scale", "0.05"], env=env, cwd=domains_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no dagster-daemon is running" in result.stderr and "--in-process" in result.stderr
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []


@pytest.mark.slow
def test_runs_go_through_the_queue_of_their_code_location(domains_copy, tmp_path):
    """Each domain's run is created for its code location and launched by the daemon; its checks run too."""
    (domains_copy / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module: {module_name: domains.policies.definitions, location_name: policies}\n"
        "  - python_module: {module_name: domains.customer_care.definitions, location_name: customer_care}\n"
    )
    home = tmp_path / "home"
    env = _env(domains_copy, home)
    home.mkdir()
    # the instance configuration (queued coordinator, per-domain limits) as every `mesh` command writes it
    assert run_mesh(["quotas"], env=env, cwd=domains_copy).returncode == 0
    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(domains_copy / "workspace.yaml")],
                              cwd=domains_copy, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from dagster._daemon.controller import get_daemon_statuses

        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            deadline = time.time() + 180
            while not get_daemon_statuses(instance, ["QUEUED_RUN_COORDINATOR"], ignore_errors=True)["QUEUED_RUN_COORDINATOR"].healthy:
                assert time.time() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
        result = run_mesh(["materialize", "--select", "policies,customer_care", "--scale", "0.05", "--timeout", "400"],
                          env=env, cwd=domains_copy, timeout=600)
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "daemon.log").read_text()[-3000:]
    assert "queued (code location policies)" in result.stdout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        by_location = {run.remote_job_origin.location_name: run for run in runs if run.remote_job_origin}
        assert set(by_location) == {"policies", "customer_care"}, [(r.run_id, r.remote_job_origin) for r in runs]
        for location, run in by_location.items():
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.tags["mesh/domain"] == location
            assert run.tags["mesh/launched_by"] == "mesh-materialize-queued"
            assert "dagster/max_runtime" in run.tags
            assert run.asset_selection and all(key.path[0] == location for key in run.asset_selection)
            # the products' checks ran in the same run, as with the UI's Materialize
            checks = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            assert checks, f"no asset check ran in {location}'s run"
        materialized = instance.get_latest_materialization_event(dg.AssetKey(["policies", "policies"]))
        assert materialized is not None and materialized.run_id == by_location["policies"].run_id


def test_independent_domains_are_ready_together():
    from mesh_platform.mesh.materialize import ready_batches

    a, b, c = dg.AssetKey(["a", "x"]), dg.AssetKey(["b", "y"]), dg.AssetKey(["c", "z"])
    graph = {a: ("a", set()), b: ("b", set()), c: ("c", {a, b})}
    assert ready_batches(graph, {a, b, c}, ["a", "b", "c"]) == [("a", {a}), ("b", {b})]
    # c waits while a is still running; a busy domain starts nothing new
    assert ready_batches(graph, {c}, ["a", "b", "c"], running={a}, busy={"a"}) == []
    assert ready_batches(graph, {c}, ["a", "b", "c"]) == [("c", {c})]


class _Mesh:
    """Just what `materialize` reads of a mesh: the asset graph, the domains, their run tags (no partitions)."""

    def __init__(self, graph):
        from types import SimpleNamespace

        self.graph = graph
        self.domains = [SimpleNamespace(entry=SimpleNamespace(location=d), ok=True) for d in dict.fromkeys(d for d, _ in graph.values())]
        self._ns = SimpleNamespace

    def asset_graph(self):
        return self.graph

    def get(self, name):
        ns = self._ns
        return ns(domain=ns(run_tags=lambda: {"mesh/domain": name}), defs=ns(resolve_asset_graph=lambda: ns(has=lambda key: False)))


class _Queue:
    """A run queue where runs end in the order they started, several in flight (as with the daemon)."""

    parallel = True

    def __init__(self):
        self.started: dict[str, tuple[str, list]] = {}

    def start(self, domain, keys, tags):
        run_id = f"run{len(self.started) + 1}"
        self.started[run_id] = (domain, keys)
        return run_id

    def wait_any(self, run_ids):
        from mesh_platform.mesh.materialize import RunOutcome

        run_id = min(run_ids, key=lambda r: int(r[3:]))
        domain, keys = self.started[run_id]
        return RunOutcome(domain, keys, True, run_id, 1.0, materialized=set(keys))


def test_through_the_queue_a_domain_can_take_two_runs_and_the_counter_counts_runs():
    """claims' landed files need nothing, claims/claims reads policies: through the queue the first
    start with policies and claims/claims follows in a second claims run. The progress says so."""
    from mesh_platform.mesh.materialize import materialize

    p, landed, claims, fraud = (dg.AssetKey(k) for k in (["policies", "p"], ["claims", "landed"], ["claims", "claims"], ["fraud", "f"]))
    graph = {p: ("policies", set()), landed: ("claims", set()), claims: ("claims", {landed, p}), fraud: ("fraud", {claims, p})}
    said: list[str] = []
    report = materialize(_Mesh(graph), set(graph), instance=None, progress=said.append, runner=_Queue())
    assert [line for line in said if line.startswith("[run")] == [
        "[run 1] policies: materializing p (1 of 4 assets started)",
        "[run 2] claims: materializing landed (2 of 4 assets started)",
        "[run 3] claims: materializing claims (3 of 4 assets started)",
        "[run 4] fraud: materializing f (4 of 4 assets started)",
    ]
    assert report.success and len(report.runs) == 4 and len({r.domain for r in report.runs}) == 3
