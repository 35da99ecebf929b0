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
from mesh_platform.domain import DomainDefinitionError
from mesh_platform.io.io_manager import MeshIOManager

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
    port = lake / "shop/orders/v1/data.parquet"
    good = port.read_bytes()

    state["orders"] = pd.DataFrame({"order_id": [f"O-{i}" for i in range(30)], "status": ["open"] * 30, "amount": [1.0] * 30, "coupon": [None] * 30})  # 30 rows
    result = dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "shop__orders")
    assert "quota rows_per_publish = 20 (this publish would use 30)" in failure.step_failure_data.error.cause.message
    assert port.read_bytes() == good  # the last good version stays
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
    assert port.read_bytes() == good


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
    from mesh_platform import instance as mesh_instance
    from mesh_platform.quotas import domain_limits
    from mesh_platform.settings import MeshSettings

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
