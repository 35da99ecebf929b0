"""Column lineage declared in contracts (``transformSourceObjects``): checked at load, published to Dagster."""

from __future__ import annotations

import dagster as dg
import pytest
from conftest import copy_env, run_mesh


# what a claim's features reach: its scores, and the hit rate of the flagged claims
SCORED = {"fraud.fraud_scores.flagged", "fraud.fraud_scores.fraud_score", "fraud.fraud_scores.risk_band", "analytics.fraud_hit_rate.flagged",
          "analytics.fraud_hit_rate.flagged_confirmed", "analytics.fraud_hit_rate.flagged_investigated", "analytics.fraud_hit_rate.hit_rate"}


def test_a_publish_carries_the_declared_column_lineage(materialized_mesh, settings):
    from mesh_platform.mesh.instance import local_instance

    key = dg.AssetKey(["fraud", "claim_features"])
    with local_instance(settings) as instance:
        event = instance.get_latest_materialization_event(key)
    lineage = event.asset_materialization.metadata["dagster/column_lineage"].value
    deps = {column: sorted((d.asset_key.to_user_string(), d.column_name) for d in found) for column, found in lineage.deps_by_column.items()}
    assert deps["claim_to_sum_insured"] == [("claims/claims", "amount_claimed"), ("policies/policies", "sum_insured")]
    assert deps["contacts"] == [("customer_care/claim_contacts", "contacts")]
    assert deps["claim_id"] == [("claims/claims", "claim_id")]
    assert set(deps) == {"claim_id", "reported_at", "product_line", "amount_claimed", "claim_to_sum_insured", "days_since_policy_start",
                         "report_delay_days", "prior_claims", "contacts", "complaints", "annual_premium"}  # every column says where it comes from
    assert "mesh/read_by" in event.asset_materialization.metadata  # who read this port lately (docs/versions.md)


def test_a_dbt_publish_carries_the_column_lineage_of_its_sql(materialized_mesh, settings):
    from mesh_platform.mesh.instance import local_instance

    with local_instance(settings) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["analytics", "loss_ratio"]))
    metadata = event.asset_materialization.metadata
    lineage = metadata["dagster/column_lineage"].value
    deps = {column: sorted((d.asset_key.to_user_string(), d.column_name) for d in found) for column, found in lineage.deps_by_column.items()}
    assert deps == {
        "product_line": [("policies/policies", "product_line")],
        "premium_written": [("policies/policies", "annual_premium")],
        "claims_paid": [("claims/claims", "amount_paid")],
        "loss_ratio": [("claims/claims", "amount_paid"), ("policies/policies", "annual_premium")],
    }
    assert metadata["mesh/read_by"].value["days"] == 30


def test_a_source_the_product_does_not_read_fails_the_load_naming_file_and_field(domains_copy, tmp_path):
    path = domains_copy / "domains/fraud/contracts/claim_features.yaml"
    text = path.read_text()
    text = text.replace("transformSourceObjects: [claims.claims.product_line]", "transformSourceObjects: [claims.claims.amount_paid]")
    text = text.replace("transformSourceObjects: [policies.policies.annual_premium]", "transformSourceObjects: [marketing.campaigns.premium]")
    path.write_text(text)
    result = run_mesh(["validate"], env={**copy_env(domains_copy), "MESH_LAKE": str(tmp_path / "lake")}, cwd=domains_copy)
    assert result.returncode == 1
    where = "domains/fraud/contracts/claim_features.yaml: schema[claim_features].properties"
    assert f"{where}[product_line].transformSourceObjects[0]: 'claims.claims.amount_paid': claims.claims has no column 'amount_paid' that this product reads" in result.stderr
    assert f"{where}[annual_premium].transformSourceObjects[0]: 'marketing.campaigns.premium' is not a column of an input of this product" in result.stderr


def test_openlineage_output_datasets_carry_the_column_lineage_facet(materialized_mesh, settings):
    from mesh_platform.mesh.instance import local_instance
    from mesh_platform.storage.lake import Lake
    from mesh_platform.lineage.events import run_events

    key = dg.AssetKey(["fraud", "claim_features"])
    with local_instance(settings) as instance:
        run_id = instance.get_latest_materialization_event(key).run_id
        events = run_events(instance, run_id, lake=Lake(settings.lake))
    complete = [e for e in events if e.eventType.value == "COMPLETE"][0]
    output = next(o for o in complete.outputs if "claim_features" in o.name)
    fields = output.facets["columnLineage"].fields
    assert [(f.name.rsplit("/", 3)[-3:], f.field) for f in fields["contacts"].inputFields][0][1] == "contacts"
    assert "claim_contacts" in fields["contacts"].inputFields[0].name
    assert fields["claim_to_sum_insured"].transformationDescription == "amount_claimed / sum_insured of the claim's policy"
    assert sorted(f.field for f in fields["claim_to_sum_insured"].inputFields) == ["amount_claimed", "sum_insured"]


def test_mesh_lineage_column_walks_declared_columns_across_domains():
    upstream = run_mesh(["lineage", "column", "fraud.claim_features.claim_to_sum_insured"])
    assert upstream.returncode == 0, upstream.stderr
    assert "upstream (computed from):\n  claims.claims.amount_claimed\n  policies.policies.sum_insured\n" in upstream.stdout
    downstream = run_mesh(["lineage", "column", "customer_care.claim_contacts.contacts"])
    found = downstream.stdout.split("downstream (computed from it):\n", 1)[1].split()
    assert set(found) == {"analytics.contact_rate.contacts", "analytics.contact_rate.contacts_per_claim", "fraud.claim_features.contacts",
                          *SCORED}, downstream.stdout
    # through Python products of three domains, into a dbt model
    hit_rate = run_mesh(["lineage", "column", "analytics.fraud_hit_rate.hit_rate"])
    upstream = hit_rate.stdout.split("upstream (computed from):\n", 1)[1].split("downstream", 1)[0].split()
    assert {"fraud.fraud_scores.flagged", "fraud.claim_features.prior_claims", "claims.claims.policyholder_id",
            "policies.policies.sum_insured", "customer_care.conversations.topic", "claims.claim_events.event_type"} <= set(upstream), hit_rate.stdout
    unknown = run_mesh(["lineage", "column", "policies.policies.nope"])
    assert unknown.returncode == 1 and "policies.policies has no column 'nope'" in unknown.stderr


def test_dbt_models_lineage_comes_from_their_sql():
    """analytics is dbt: loss_ratio's columns reach the policies and claims columns they are computed from."""
    result = run_mesh(["lineage", "column", "analytics.loss_ratio.loss_ratio"])
    assert result.returncode == 0, result.stderr
    assert "upstream (computed from):\n  claims.claims.amount_paid\n  policies.policies.annual_premium\n" in result.stdout
    premium = run_mesh(["lineage", "column", "policies.policies.annual_premium"])
    found = premium.stdout.split("downstream (computed from it):\n", 1)[1].split()
    assert set(found) == {"analytics.loss_ratio.loss_ratio", "analytics.loss_ratio.premium_written", "fraud.claim_features.annual_premium", *SCORED}


def test_dbt_sql_reads_are_narrower_than_the_declared_source_columns():
    """What the contract gate counts as read by a dbt model: the columns its SQL uses, joins included."""
    from mesh_platform.mesh.workspace import Mesh

    plan = Mesh.load().get("analytics").domain.last_plan.dbt
    loss = plan.model_columns("loss_ratio")
    assert loss.reads == {"claims.claims": ["amount_paid", "product_line"], "policies.policies": ["annual_premium", "product_line"]}
    assert loss.lineage["premium_written"] == ["policies.policies.annual_premium"]
    assert "policies" not in loss.lineage  # count(*): rows, not a column
    lineage = plan.column_lineage("loss_ratio")
    deps = {c: sorted((d.asset_key.to_user_string(), d.column_name) for d in ds) for c, ds in lineage.deps_by_column.items()}
    assert deps["loss_ratio"] == [("claims/claims", "amount_paid"), ("policies/policies", "annual_premium")]


def test_dbt_sql_with_other_jinja_is_not_guessed(tmp_path):
    from mesh_platform.dbt.sql_lineage import SqlNotAnalysable, analyse

    class Project:
        path = tmp_path
        manifest = {"sources": {}}

        def models(self):
            return {"model.x.m": {"name": "m", "raw_code": "select {{ var('x') }} as a"}}

        def source_ports(self):
            return {}

    with pytest.raises(SqlNotAnalysable, match="m: its SQL uses Jinja beyond source"):
        analyse(Project(), "analytics", "m", ["a"], {})
