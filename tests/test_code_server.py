"""The domains' code servers start their runs from a process that has loaded the domain already
(``mesh_platform.deployment.code_server``): a real code server, runs launched through Dagster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import dagster as dg
import pytest

from conftest import LAUNCH_RUN, wait_until
from mesh_platform.deployment import code_server, run_preload
from mesh_platform.deployment.stack.processes import free_port

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "warm"
READY = ("runs start from a preloaded process", "runs start in fresh processes")


def serve_and_run(tmp_path: Path, runs: int = 2, **env: str) -> tuple[list[dict], str, subprocess.Popen]:
    """Start the fixture's code server, launch ``runs`` runs of its asset through Dagster, return
    what each run wrote, the server's log and the (still running) server."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n")
    out, log = tmp_path / "where.jsonl", tmp_path / "code-server.log"
    port = free_port()
    server = subprocess.Popen(code_server.command("warm_location", "warm", port), cwd=FIXTURE, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                              env={**os.environ, "DAGSTER_HOME": str(home), "WARM_OUT": str(out), **env}, start_new_session=True)
    try:
        wait_until(lambda: any(line in log.read_text() for line in READY), 120, "the code server to choose how it starts runs", log)
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {port}, location_name: warm}}\n")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            with WorkspaceProcessContext(instance=instance, workspace_load_target=WorkspaceFileTarget(paths=[str(workspace)])) as process:
                params = {"selector": {"repositoryLocationName": "warm", "repositoryName": "__repository__", "jobName": "__ASSET_JOB"}, "mode": "default"}
                for _ in range(runs):
                    data = execute_dagster_graphql(process.create_request_context(), LAUNCH_RUN, variables={"params": params}).data["launchRun"]
                    assert data["__typename"] == "LaunchRunSuccess", data
                    run_id = data["run"]["runId"]
                    wait_until(lambda: instance.get_run_by_id(run_id).is_finished, 120, "the run to finish", log)
                    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS, [e.message for e in instance.all_logs(run_id)][-5:]
    except BaseException:
        os.killpg(server.pid, signal.SIGKILL)
        raise
    return [json.loads(line) for line in out.read_text().splitlines()], log.read_text(), server


def test_runs_are_forked_from_a_process_that_loaded_the_location(tmp_path):
    written, log, server = serve_and_run(tmp_path)
    try:
        assert "runs start from a preloaded process" in log, log[-2000:]
        assert len(written) == 2
        for run in written:
            # the module was imported once, before the run's process existed, by the run's parent
            assert run["loaded_in"] != run["pid"] and run["loaded_in"] == run["parent"], run
            # what the preload loaded is frozen: the run's collections do not walk it again
            assert run["frozen"] > 100_000, run
        forkserver = written[0]["parent"]
        assert written[1]["parent"] == forkserver
        # the preloading process is the code server's child, and goes with it
        with open(f"/proc/{forkserver}/stat") as fh:
            assert int(fh.read().rsplit(")", 1)[1].split()[1]) == server.pid
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    wait_until(lambda: not Path(f"/proc/{forkserver}").exists() or "Z" in Path(f"/proc/{forkserver}/stat").read_text().rsplit(")", 1)[1].split()[0],
             30, "the preloading process to exit with its code server")


def test_a_process_unsafe_to_fork_keeps_dagsters_fresh_run_processes(tmp_path):
    """A module that leaves a thread running at import: its runs start as Dagster starts them, and succeed."""
    written, log, server = serve_and_run(tmp_path, runs=1, WARM_HAZARD="1")
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    assert "cannot be forked safely" in log and "left-running" in log, log[-2000:]
    assert written and written[0]["loaded_in"] == written[0]["pid"], written


def test_each_domain_preloads_what_its_steps_import():
    """The platform's libraries for every domain; dbt where the domain is dbt, OpenDP where it reads
    aggregates, and what the domain declares (fraud: scikit-learn)."""
    import importlib

    imports = {d: run_preload.run_imports(importlib.import_module(f"domains.{d}.definitions")) for d in ("claims", "fraud", "analytics")}
    for names in imports.values():
        assert set(run_preload.PLATFORM_RUN_IMPORTS) <= set(names)
    assert "dbt.cli.main" in imports["analytics"] and "dbt.cli.main" not in imports["claims"] + imports["fraud"]
    assert "opendp.prelude" in imports["analytics"] and "opendp.prelude" not in imports["claims"]
    assert "sklearn.ensemble" in imports["fraud"] and "sklearn.ensemble" not in imports["claims"]
    for names in imports.values():
        for name in names:
            importlib.util.find_spec(name)  # each is a module of this environment


def test_a_run_import_that_is_no_module_name_is_refused(tmp_path):
    from mesh_platform.contracts.loader import ContractError
    from mesh_platform.deployment.helm import deployment_of

    descriptor = tmp_path / "domain.yaml"
    descriptor.write_text("name: x\nkind: source-aligned\ndeployment:\n  run_imports: [sklearn.ensemble, 'rm -rf /']\n")
    with pytest.raises(ContractError) as err:
        deployment_of(descriptor)
    assert "deployment.run_imports[1]" in str(err.value) and "domain.yaml" in str(err.value)


def test_a_dbt_domains_column_lineage_is_worked_out_ahead_of_its_runs(monkeypatch):
    """What each run of analytics would work out again (its models' SQL parsed for the column
    lineage, the prepared dbt manifest loaded) is done once, in the process the runs start from; a
    run then finds it done."""
    import importlib

    from mesh_platform.dbt import sql_lineage

    module = importlib.import_module("domains.analytics.definitions")
    plan = module.domain.last_plan.dbt
    plan.analysed.clear()
    plan.project.__dict__.pop("_dbt_manifest", None)
    project_files = sorted(p.relative_to(plan.project.path) for p in plan.project.path.rglob("*") if "logs" not in p.parts)
    threads = {t.ident for t in threading.enumerate()}
    run_preload.analyse_ahead(module)
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt_common.clients.jinja import template_cache

    # dbt's first build (over empty sources) is behind us: the Jinja of the macros a build calls
    # is compiled, and the database it used is closed, not left open for a fork to inherit
    macros = plan.project.dbt_manifest().macros
    for name in ("macro.dbt_duckdb.materialization_table_duckdb", "macro.dbt.materialization_test_default"):
        assert macros[name].macro_sql in template_cache.file_cache
    assert DuckDBConnectionManager._ENV is None
    assert {t.ident for t in threading.enumerate()} == threads  # no thread left for a fork to lose
    assert sorted(p.relative_to(plan.project.path) for p in plan.project.path.rglob("*") if "logs" not in p.parts) == project_files
    assert set(plan.analysed) == set(plan.contracts) and not [m for m, found in plan.analysed.items() if isinstance(found, Exception)]
    loaded = plan.project.dbt_manifest()
    assert loaded is not None

    def again(*args, **kwargs):
        raise AssertionError("worked out again")

    monkeypatch.setattr(sql_lineage, "analyse", again)
    monkeypatch.setattr(type(plan.project), "_load_state", again)
    lineage = plan.column_lineage("claims_weekly")
    assert lineage is not None and lineage.deps_by_column["amount_paid"][0].column_name == "amount_paid"
    assert plan.project.dbt_manifest() is loaded  # the prepared manifest, loaded once
