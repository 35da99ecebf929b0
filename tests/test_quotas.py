"""Quotas: declared per domain within the mesh's ceilings, enforced through Dagster and before publish."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from mesh_platform import Domain
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.products.domain import DomainDefinitionError
from mesh_platform.storage.io_manager import MeshIOManager

FIXTURE = Path(__file__).parent / "fixtures" / "quality_mesh"
ROWS = pd.DataFrame({"order_id": [f"O-{i}" for i in range(10)], "status": ["open"] * 10, "amount": [1.0] * 10, "coupon": [None] * 10})

CEILINGS = "defaults:\n  concurrent_runs: 2\nceilings:\n  concurrent_runs: 4\n  rows_per_publish: 1000\n  storage_bytes: 1GiB\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the fixture mesh with a mesh quotas file; returns (domains root, domain.yaml path)."""
    root = tmp_path / "project"
    shutil.copytree(FIXTURE, root / "domains")
    (root / "quotas.yaml").write_text(CEILINGS)
    monkeypatch.setenv("MESH_DOMAINS", str(root / "domains"))
    monkeypatch.setenv("MESH_LAKE", str(tmp_path / "lake"))
    return root / "domains", root / "domains" / "shop" / "domain.yaml"


def _with_quotas(descriptor: Path, quotas: dict) -> None:
    raw = yaml.safe_load(descriptor.read_text())
    raw["quotas"] = quotas
    descriptor.write_text(yaml.safe_dump(raw))


def _shop(domains: Path, state: dict) -> tuple[list, dict]:
    domain = Domain.load(domains / "shop" / "definitions.py")

    @domain.product("orders")
    def orders() -> pd.DataFrame:
        return state["orders"]

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("status").size().rename("orders").reset_index()

    assets, _ = domain.build_assets(ContractRegistry.discover(domains))
    return assets, domain


def test_a_quota_block_that_breaks_the_rules_fails_its_domain_naming_file_and_field(project):
    domains, descriptor = project
    _with_quotas(descriptor, {"bogus": 1, "concurrent_runs": -1, "rows_per_publish": 5000, "storage_bytes": "lots", "memory_limit": "4 gigs"})
    with pytest.raises(DomainDefinitionError) as info:
        _shop(domains, {})
    problems = {(Path(p.file).name, p.field): p.message for p in info.value.problems}
    assert "unknown quota" in problems[("domain.yaml", "quotas.bogus")]
    assert "must not be negative" in problems[("domain.yaml", "quotas.concurrent_runs")]
    assert "above the mesh ceiling 1000" in problems[("domain.yaml", "quotas.rows_per_publish")]
    assert "is not a size" in problems[("domain.yaml", "quotas.storage_bytes")]
    assert "Kubernetes memory quantity" in problems[("domain.yaml", "quotas.memory_limit")]


def test_infinite_or_nan_quotas_fail_their_domain_naming_file_and_field(project):
    domains, descriptor = project
    _with_quotas(descriptor, {"storage_bytes": float("inf"), "bytes_per_publish": float("-inf"), "privacy_epsilon": float("nan")})
    with pytest.raises(DomainDefinitionError) as info:  # not an OverflowError from inside the platform
        _shop(domains, {})
    problems = {(Path(p.file).name, p.field): p.message for p in info.value.problems}
    assert "not a finite size" in problems[("domain.yaml", "quotas.storage_bytes")]
    assert "not a finite size" in problems[("domain.yaml", "quotas.bytes_per_publish")]
    assert "must be a finite number" in problems[("domain.yaml", "quotas.privacy_epsilon")]


def test_a_malformed_mesh_quota_file_names_its_field(project):
    domains, _ = project
    (domains.parent / "quotas.yaml").write_text("defaults:\n  concurrent_runs: 9\nceilings:\n  concurrent_runs: 4\n  rows: 3\n")
    with pytest.raises(DomainDefinitionError) as info:
        _shop(domains, {})
    problems = {(Path(p.file).name, p.field): p.message for p in info.value.problems}
    assert "unknown quota" in problems[("quotas.yaml", "ceilings.rows")]
    assert "above the ceiling" in problems[("quotas.yaml", "defaults.concurrent_runs")]


def test_oversize_publish_and_storage_overrun_are_refused_with_the_last_good_version_intact(project, tmp_path):
    domains, descriptor = project
    _with_quotas(descriptor, {"rows_per_publish": 20, "max_run_seconds": 600})
    state = {"orders": ROWS}
    assets, domain = _shop(domains, state)
    orders = next(a for a in assets if a.key == dg.AssetKey(["shop", "orders"]))
    assert next(iter(orders.specs)).metadata["mesh/quotas"].data["rows_per_publish"] == 20  # shown on the product's page
    assert orders.op.pool == "shop"  # the domain's concurrency pool
    assert domain.run_tags()["dagster/max_runtime"] == "600"
    lake = tmp_path / "lake"
    resources = {"io_manager": MeshIOManager(lake=str(lake))}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(assets, resources=resources, instance=instance).success
    from deltalake import DeltaTable

    port = str(lake / "shop/orders/v1")
    good = DeltaTable(port).version()

    state["orders"] = pd.DataFrame({"order_id": [f"O-{i}" for i in range(30)], "status": ["open"] * 30, "amount": [1.0] * 30, "coupon": [None] * 30})  # 30 rows
    result = dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "shop__orders")
    assert "quota rows_per_publish = 20 (this publish would use 30)" in failure.step_failure_data.error.cause.message
    assert DeltaTable(port).version() == good  # the last good version stays
    assert not any(e.is_step_success and e.step_key == "shop__order_stats" for e in result.all_events)  # downstream did not run
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(dg.AssetKey(["shop", "orders"]), "quota")])
    assert not next(iter(check.values())).event.dagster_event.event_specific_data.passed
    observations = instance.fetch_observations(dg.AssetKey(["shop", "orders"]), limit=10).records
    audited = [o.event_log_entry.asset_observation.metadata for o in observations]
    assert any(m["mesh/audit"].value == "quota" and "rows_per_publish" in m["mesh/reasons"].value for m in audited)

    # storage: the domain's prefix already holds more than the quota allows
    _with_quotas(descriptor, {"storage_bytes": 1})
    state["orders"] = ROWS
    assets, _ = _shop(domains, state)
    refused = dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure and e.step_key == "shop__orders")
    assert "quota storage_bytes" in failure.step_failure_data.error.cause.message
    assert DeltaTable(port).version() == good


def test_near_a_quota_the_check_warns(project, tmp_path):
    domains, descriptor = project
    _with_quotas(descriptor, {"rows_per_publish": 11})  # 10 rows: 91%
    assets, _ = _shop(domains, {"orders": ROWS})
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(assets, resources={"io_manager": MeshIOManager(lake=str(tmp_path / "lake"))}, instance=instance).success
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(dg.AssetKey(["shop", "orders"]), "quota")])
    evaluation = next(iter(check.values())).event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["rows_per_publish_percent"].value == pytest.approx(90.91, abs=0.01)


def test_the_local_instance_limits_each_domains_runs_by_its_quota(tmp_path, project):
    from mesh_platform.mesh import instance as mesh_instance
    from mesh_platform.governance.quotas import domain_limits
    from mesh_platform.foundations.settings import MeshSettings

    domains, descriptor = project
    _with_quotas(descriptor, {"concurrent_runs": 3, "pool_slots": 1})
    quotas = domain_limits(domains, ["shop"])
    home = tmp_path / "dagster_home"
    settings = MeshSettings(str(tmp_path), str(tmp_path / "lake"), str(tmp_path / "sources"), str(home))
    mesh_instance.ensure_dagster_home(settings, quotas)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "mesh/domain", "value": "shop", "limit": 3} in limits
        mesh_instance.set_pool_slots(instance, quotas)
        assert instance.event_log_storage.get_concurrency_info("shop").slot_count == 1


@pytest.mark.slow
def test_the_daemon_holds_runs_to_each_domains_quota(tmp_path, monkeypatch):
    """Real daemon, real queue: alpha's second run waits while beta's runs; a pool's slots are never
    exceeded; a run over its domain's time limit is failed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    from mesh_platform.mesh import instance as mesh_instance
    from mesh_platform.governance.quotas import MeshQuotas, resolve

    mesh = MeshQuotas({"concurrent_runs": 1, "pool_slots": 1, "max_run_seconds": 600}, {})
    quotas = {name: resolve(name, None, "domain.yaml", mesh)[0] for name in ("alpha", "beta", "gamma")}
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(mesh_instance.instance_yaml(quotas))
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    fixture = Path(__file__).parent / "fixtures" / "queued" / "definitions.py"
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {fixture}\n      location_name: queued\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    launch = """
    mutation($params: ExecutionParams!) {
      launchRun(executionParams: $params) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
    }"""
    daemon = None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        mesh_instance.set_pool_slots(instance, quotas)
        with WorkspaceProcessContext(instance=instance, workspace_load_target=WorkspaceFileTarget(paths=[str(workspace)])) as process:
            context = process.create_request_context()

            def submit(job: str) -> str:
                params = {"selector": {"repositoryLocationName": "queued", "repositoryName": "__repository__", "jobName": job}, "mode": "default"}
                data = execute_dagster_graphql(context, launch, variables={"params": params}).data["launchRun"]
                assert data["__typename"] == "LaunchRunSuccess", data
                return data["run"]["runId"]

            alpha_1, alpha_2, beta, gamma = submit("alpha_job"), submit("alpha_job"), submit("beta_job"), submit("gamma_job")
            assert instance.get_run_by_id(alpha_2).status == dg.DagsterRunStatus.QUEUED
            log = open(tmp_path / "daemon.log", "wb")
            daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(workspace)],
                                      env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                seen_alpha_waiting_while_beta_done = False
                both_alpha_started = False
                most_alpha_slots = 0
                deadline = time.time() + 240
                while time.time() < deadline:  # bounded
                    status = {run_id: instance.get_run_by_id(run_id).status for run_id in (alpha_1, alpha_2, beta, gamma)}
                    started = {r for r, s in status.items() if s == dg.DagsterRunStatus.STARTED}
                    both_alpha_started |= {alpha_1, alpha_2} <= started
                    # beta was submitted after alpha's second run, yet is launched while that one waits
                    seen_alpha_waiting_while_beta_done |= status[alpha_2] == dg.DagsterRunStatus.QUEUED and status[beta] in (
                        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS)
                    most_alpha_slots = max(most_alpha_slots, len(instance.event_log_storage.get_concurrency_info("alpha").claimed_slots))
                    if all(instance.get_run_by_id(r).is_finished for r in (alpha_1, alpha_2, beta, gamma)):
                        break
                    time.sleep(0.5)
                else:
                    print((tmp_path / "daemon.log").read_text()[-4000:])
                    pytest.fail("the runs did not finish within 240 s")
            finally:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=30)
            assert seen_alpha_waiting_while_beta_done, "alpha's second run never waited in the queue while beta's was launched"
            assert not both_alpha_started
            assert most_alpha_slots <= 1
            assert instance.get_run_by_id(alpha_1).status == instance.get_run_by_id(alpha_2).status == dg.DagsterRunStatus.SUCCESS
            assert instance.get_run_by_id(gamma).status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            messages = " ".join(e.message or "" for e in instance.all_logs(gamma))
            assert "maximum runtime" in messages


@pytest.mark.slow
def test_mesh_quotas_and_usage_report_the_materialized_mesh(materialized_mesh, settings):
    import json

    from conftest import run_mesh

    from mesh_platform.storage.lake import Lake

    result = run_mesh(["quotas", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    domains = {d["domain"]: d for d in json.loads(result.stdout)["domains"]}
    claims = {q["quota"]: q for q in domains["claims"]["quotas"]}
    assert claims["storage_bytes"]["limit"] == 20 * 1024**3  # from domains/claims/domain.yaml
    assert claims["storage_bytes"]["use"] == Lake(settings.lake).size_under("claims") > 0
    assert claims["rows_per_publish"]["limit"] == 5_000_000 and 0 < claims["rows_per_publish"]["use"] < 5_000_000
    assert claims["rows_per_publish"]["percent"] == pytest.approx(100 * claims["rows_per_publish"]["use"] / 5_000_000, abs=0.1)

    result = run_mesh(["usage", "--since", "1", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    products = {(p["domain"], p["product"]): p for d in report["domains"] for p in d["products"]}
    claims_port = products[("claims", "claims")]
    assert claims_port["runs"] >= 1 and claims_port["compute_seconds"] > 0
    assert claims_port["rows_published"] >= claims_port["rows_latest"] > 0
    assert claims_port["reads"].get("fraud", 0) >= 1  # fraud reads the claims port (audited)
    assert claims_port["cost"] > 0
    fraud = next(d for d in report["domains"] if d["domain"] == "fraud")
    assert fraud["bytes_stored"] >= sum(p["bytes_stored"] for p in fraud["products"])  # + its private model
    # a domain's runs are its distinct runs: one run publishing both policies products counts once
    import dagster as dg

    with dg.DagsterInstance.from_config(settings.dagster_home) as instance:
        runs = {r.run_id for name in ("policies", "policyholders")
                for r in instance.fetch_materializations(dg.AssetKey(["policies", name]), limit=1000).records}
    policies = next(d for d in report["domains"] if d["domain"] == "policies")
    assert policies["runs"] == len(runs) < sum(p["runs"] for p in policies["products"])
    # and its compute seconds count each step once: the one dbt step that builds analytics' models
    # is in each model's line, and once in the domain's
    analytics = next(d for d in report["domains"] if d["domain"] == "analytics")
    assert 0 < analytics["compute_seconds"] < sum(p["compute_seconds"] for p in analytics["products"])
    usage_text = run_mesh(["usage", "--since", "1"]).stdout
    assert f"policies: {policies['runs']} run(s), " in usage_text

    text = run_mesh(["quotas"]).stdout  # as a person reads it: sizes in units, run limits with their use
    assert "bytes_per_publish  limit 8.0 GiB" in text and "8589934592" not in text
    assert "concurrent_runs    limit 2              use 0" in text
    assert "max_run_seconds    limit 3,600 s (1 h)  per run: run monitoring fails a longer run" in text  # claims' own
    assert "cpu_request        limit 500m           per run pod (Kubernetes)" in text
    assert " - \n" not in text and not any(line.rstrip().endswith(" -") for line in text.splitlines())  # no bare '-'
    audit = [line for line in run_mesh(["audit"]).stdout.splitlines() if line[:4].isdigit()]
    assert len(audit) > 2 and audit[0][:23] >= audit[-1][:23]  # newest first: `mesh audit | head` shows the latest
    assert [line for line in run_mesh(["audit", "--oldest-first"]).stdout.splitlines() if line[:4].isdigit()] == audit[::-1]
    records = json.loads(run_mesh(["audit", "--json"]).stdout)["records"]  # JSON: in the order they happened
    assert len(records) == len(audit) and [r["time"] for r in records] == sorted(r["time"] for r in records)


def test_quota_values_read_as_people_read_them():
    """`mesh quotas` text: sizes in units, run time in seconds and hours, an unset quota is no limit."""
    from mesh_platform.governance.quotas import show

    assert show("bytes_per_publish", 8 * 1024**3) == "8.0 GiB"
    assert show("storage_bytes", 512) == "512 B"
    assert show("max_run_seconds", 4 * 3600) == "14,400 s (4 h)"
    assert show("max_run_seconds", 90) == "90 s"
    assert show("rows_per_publish", 5_000_000) == "5,000,000"
    assert show("concurrent_runs", None) == "no limit"
    assert show("memory_limit", "4Gi") == "4Gi"

def test_the_privacy_quota_bounds_a_domains_epsilon_over_every_product(tmp_path):
    from mesh_platform.governance.privacy import PrivacyBudgetExhausted, PrivacyLedger

    ledger = PrivacyLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.spend("analytics", "a.x", 0.6, 1.0, "q", quota=1.0)  # each grant's budget allows 1.0 ...
    with pytest.raises(PrivacyBudgetExhausted, match="quota privacy_epsilon 1 over every product"):
        ledger.spend("analytics", "b.y", 0.6, 1.0, "q", quota=1.0)  # ... the domain's quota does not
    assert ledger.spent_by("analytics") == pytest.approx(0.6)  # nothing debited by the refusal
    assert ledger.spend("fraud", "b.y", 0.6, 1.0, "q", quota=1.0) == pytest.approx(0.4)  # per consumer domain


def test_a_grant_above_the_privacy_ceiling_fails_its_producer(project):
    domains, _ = project
    (domains.parent / "quotas.yaml").write_text(CEILINGS + "  privacy_epsilon: 5\n")
    (domains / "shop" / "grants.yaml").write_text(yaml.safe_dump({"grants": [{
        "product": "orders", "consumer": "insights", "purpose": "Order counts by status.", "port": "aggregate",
        "privacy": {"epsilon": 8, "unit": "order_id", "max_contributions": 1}}]}))
    with pytest.raises(DomainDefinitionError) as info:
        _shop(domains, {})
    problems = {(Path(p.file).name, p.field): p.message for p in info.value.problems}
    assert "above the mesh ceiling privacy_epsilon 5" in problems[("grants.yaml", "grants[0].privacy.epsilon")]


@pytest.mark.slow  # it needs the whole mesh materialized (as every test of `materialized_mesh`)
def test_an_aggregate_read_over_the_consumers_privacy_quota_is_refused(materialized_mesh, domains_copy, tmp_path, settings):
    """Through Dagster: analytics' contact_topics reads customer_care aggregates; with a quota below
    what that read costs on top of what analytics has spent, the step fails and spends nothing."""
    from conftest import copy_env, run_mesh

    from mesh_platform.governance.privacy import PrivacyLedger

    from mesh_platform.governance.privacy import ledger_url

    ledger = ledger_url(settings.home)  # the session mesh's, where `mesh materialize` debited it
    spent = PrivacyLedger(ledger).spent_by("analytics")
    assert spent > 0  # the mesh run read the aggregates once
    descriptor = domains_copy / "domains" / "analytics" / "domain.yaml"
    _with_quotas(descriptor, {"privacy_epsilon": spent + 0.25})  # the query asks for 0.5
    env = {**copy_env(domains_copy), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    result = run_mesh(["materialize", "--in-process", "--select", "analytics/contact_topics"], env=env, cwd=domains_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "quota privacy_epsilon" in result.stdout
    assert PrivacyLedger(ledger).spent_by("analytics") == pytest.approx(spent)

    quotas = run_mesh(["quotas", "--json"])
    import json

    analytics = {q["quota"]: q for d in json.loads(quotas.stdout)["domains"] if d["domain"] == "analytics" for q in d["quotas"]}
    assert analytics["privacy_epsilon"]["limit"] == 20 and analytics["privacy_epsilon"]["use"] == pytest.approx(spent)
