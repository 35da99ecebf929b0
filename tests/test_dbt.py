"""The analytics domain in dbt: lineage, contracts from ODCS, dbt tests as checks, governed reads."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest
import yaml

from conftest import ROOT, copy_env, run_mesh

MODELS = ["claims_weekly", "loss_ratio", "fraud_hit_rate", "contact_rate"]


def test_dbt_contracts_are_generated_from_odcs_and_in_sync():
    result = run_mesh(["dbt", "sync", "--check"])
    assert result.returncode == 0, result.stdout
    generated = yaml.safe_load((ROOT / "dbt/analytics/models/_mesh_contracts.yml").read_text())
    weekly = next(m for m in generated["models"] if m["name"] == "claims_weekly")
    assert weekly["config"]["contract"] == {"enforced": True}
    assert weekly["columns"][0] == {
        "name": "week_start", "data_type": "date", "description": "Monday of the reporting week.",
        "constraints": [{"type": "not_null"}], "data_tests": ["unique"],  # not null: the enforced constraint
    }


def test_dbt_models_are_products_wired_to_the_producers():
    from domains.analytics.definitions import defs

    graph = defs.resolve_asset_graph()
    for name in MODELS:
        node = graph.get(dg.AssetKey(["analytics", name]))
        assert node.is_materializable and node.group_name == "analytics"
        assert node.owners == ["team:insurance-analytics", "analytics@acme-insurance.example"]
        assert node.metadata["mesh/contract_id"] == f"analytics.{name}"
        assert node.metadata["dagster/column_schema"].columns
        assert node.freshness_policy is not None
        assert "dbt" in node.kinds
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey(["analytics", "fraud_hit_rate"])).parent_keys}
    assert parents == {"fraud/fraud_scores", "claims/claim_events"}  # the scores carry the product line: no join to claims
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey(["analytics", "contact_rate"])}
    assert "primary_key_unique" in checks and not any(name.startswith("not_null_") for name in checks)
    assert any(name.startswith("accepted_values_contact_rate_status") for name in checks)


def test_a_dbt_source_without_a_grant_fails_the_load(domains_copy):
    path = domains_copy / "domains/fraud/grants.yaml"
    path.write_text("grants: []\n")
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 1
    assert "dbt/analytics/models/sources.yml: fraud_hit_rate.inputs[fraud.fraud_scores]: [input_ports_granted] domain 'analytics' may not read 'fraud.fraud_scores'" in result.stderr


@pytest.mark.slow
def test_a_failing_dbt_test_shows_as_a_failed_check_and_stops_publish(domains_copy, tmp_path):
    home = tmp_path / "home"
    env = {**copy_env(domains_copy), "MESH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    first = run_mesh(["materialize", "--in-process", "--scale", "0.3"], env=env, cwd=domains_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    # runs write nothing into the project (it may be read-only in a container): only prepare's target/
    assert sorted(p.name for p in (domains_copy / "dbt/analytics").iterdir()) == ["dbt_project.yml", "models", "profiles.yml", "target"]
    from deltalake import DeltaTable

    port = home / "lake/analytics/claims_weekly/v1"
    before = DeltaTable(str(port)).version()
    sql = domains_copy / "dbt/analytics/models/marts/claims_weekly.sql"
    sql.write_text(sql.read_text().replace("group by 1", "group by 1\nunion all\nselect * from (select cast('2024-01-01' as date), 1, 1, 1.0, 1.0)\nunion all\nselect * from (select cast('2024-01-01' as date), 1, 1, 1.0, 1.0)"))
    second = run_mesh(["materialize", "--in-process", "--select", "analytics/claims_weekly"], env=env, cwd=domains_copy)
    assert second.returncode == 1
    assert "claims_weekly: a blocking dbt test failed; not published" in second.stdout
    assert DeltaTable(str(port)).version() == before  # the last good version stays published
    check = subprocess.run(
        [sys.executable, "-c", (
            "import dagster as dg; i = dg.DagsterInstance.get(); "
            "k = dg.AssetCheckKey(dg.AssetKey(['analytics','claims_weekly']), 'unique_claims_weekly_week_start'); "
            "e = i.event_log_storage.get_latest_asset_check_execution_by_key([k])[k]; "
            "print(e.event.dagster_event.event_specific_data.passed)"
        )],
        env={**os.environ, **env}, capture_output=True, text=True,
    )
    assert check.stdout.strip() == "False", check.stderr
    assert len(DeltaTable(str(port)).to_pandas()) == len(DeltaTable(str(port), version=before).to_pandas())
    # a null in a required column: no test runs for it, the enforced contract's constraint refuses the table
    sql.write_text((ROOT / "dbt/analytics/models/marts/claims_weekly.sql").read_text().replace("sum(amount_paid) as amount_paid", "cast(null as double) as amount_paid"))
    third = run_mesh(["materialize", "--in-process", "--select", "analytics/claims_weekly"], env=env, cwd=domains_copy)
    assert third.returncode == 1
    assert "claims_weekly: dbt error" in third.stdout and "NOT NULL constraint" in third.stdout, third.stdout[-3000:]
    assert DeltaTable(str(port)).version() == before
    # a quota refuses one model's publish (the step publishes the models in a thread of its own):
    # the others publish, the refused one keeps its last good version, and the refusal is audited
    sql.write_text((ROOT / "dbt/analytics/models/marts/claims_weekly.sql").read_text())
    descriptor = domains_copy / "domains/analytics/domain.yaml"
    descriptor.write_text(descriptor.read_text() + "quotas:\n  rows_per_publish: 10\n")  # claims_weekly has more rows than loss_ratio's 4
    ratio = home / "lake/analytics/loss_ratio/v1"
    ratio_before = DeltaTable(str(ratio)).version()
    fourth = run_mesh(["materialize", "--in-process", "--select", "analytics/claims_weekly,analytics/loss_ratio"], env=env, cwd=domains_copy)
    assert fourth.returncode == 1
    assert "claims_weekly: " in fourth.stdout and "rows_per_publish" in fourth.stdout, fourth.stdout[-3000:]
    assert DeltaTable(str(port)).version() == before and DeltaTable(str(ratio)).version() == ratio_before + 1
    audit = run_mesh(["audit", "--product", "analytics/claims_weekly"], env=env, cwd=domains_copy)
    assert "REFUSED by quota" in audit.stdout and "rows_per_publish" in audit.stdout, audit.stdout[-2000:]


def test_runs_use_the_prepared_manifest_and_fall_back_to_parsing_on_a_bad_state(tmp_path):
    import shutil

    from mesh_platform.dbt.project import DbtDomainProject

    copy = tmp_path / "analytics"
    shutil.copytree(ROOT / "dbt/analytics", copy, ignore=shutil.ignore_patterns("logs", "*.duckdb", ".user.yml"))
    project = DbtDomainProject(copy)
    manifest = project.dbt_manifest()
    assert {n.name for n in manifest.nodes.values() if n.resource_type == "model"} == set(MODELS)
    assert sum(n.resource_type == "test" for n in manifest.nodes.values()) > len(MODELS)
    project.state_path.write_bytes(b"not a dbt state")
    os.utime(project.manifest_path)  # the manifest itself stays current
    assert DbtDomainProject(copy).dbt_manifest() is None  # dbt will parse: slower, never wrong


def test_a_run_without_the_models_checks_yields_none_of_them(materialized_mesh, settings):
    """Automation (and the UI) may launch a dbt model without its checks; dbt still runs the tests on
    it (they decide whether it publishes) but only the checks the run selected are reported, not
    "AssetCheckResult ... was yielded which is not selected" warnings."""
    import dagster as dg

    from domains.analytics.definitions import defs
    from mesh_platform.mesh.instance import local_instance

    key = dg.AssetKey(["analytics", "loss_ratio"])
    without_checks = dg.define_asset_job("loss_ratio_without_checks", selection=dg.AssetSelection.assets(key).without_checks())
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[without_checks])).resolve_job_def("loss_ratio_without_checks")
    with local_instance(settings) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    messages = [e.message or "" for e in result.all_events]
    assert not [m for m in messages if "which is not selected" in m], [m for m in messages if "not selected" in m]
    assert not result.get_asset_check_evaluations()


def test_a_publish_that_raises_stops_the_models_after_it(materialized_mesh, settings, monkeypatch):
    """The step publishes its models in a thread while it records the dbt tests' results; when one
    publish raises, the models after it are not published (a port is never published without its
    materialization recorded), and the step fails."""
    import dagster as dg
    from deltalake import DeltaTable

    from pathlib import Path

    import mesh_platform.dbt.assets as dbt_assets
    from domains.analytics.definitions import defs
    from mesh_platform.mesh.instance import local_instance

    marts = ["claims_weekly", "loss_ratio", "contact_rate", "fraud_hit_rate"]
    ports = {m: Path(settings.lake) / "analytics" / m / "v1" for m in marts}
    before = {m: DeltaTable(str(p)).version() for m, p in ports.items()}
    called = []
    real = dbt_assets._publish_model

    def failing(context, specs, lake, reports, home, name, frame):
        called.append(name)
        if len(called) == 1:
            raise OSError(f"the lake refused {name}")
        return real(context, specs, lake, reports, home, name, frame)

    monkeypatch.setattr(dbt_assets, "_publish_model", failing)
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("marts", selection=dg.AssetSelection.assets(*[dg.AssetKey(["analytics", m]) for m in marts]))])).resolve_job_def("marts")
    with local_instance(settings) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert called == [called[0]] and "the lake refused" in result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert {m: DeltaTable(str(p)).version() for m, p in ports.items()} == before
    assert not result.get_asset_materialization_events()
