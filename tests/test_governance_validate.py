"""`mesh validate` and `mesh policies` flag each governance violation in deliberately broken copies."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import copy_env, run_mesh


def edit_yaml(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def validate(project):
    return run_mesh(["validate"], env=copy_env(project), cwd=project)


def test_expired_grant_fails_the_consumer_only(domains_copy):
    edit_yaml(domains_copy / "domains/policies/grants.yaml", lambda g: g["grants"][4].update(expires="2020-01-01"))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/customer_care/definitions.py: conversations.inputs[holders]: [input_ports_granted] domain 'customer_care' may not read 'policies.policyholders': the grant in domains/policies/grants.yaml expired on 2020-01-01" in result.stderr
    assert "4 domain(s) loaded" in result.stdout


def test_malformed_grant_names_file_and_field(domains_copy):
    edit_yaml(domains_copy / "domains/fraud/grants.yaml", lambda g: g["grants"][0].update(expires="next year", colour="red"))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/fraud/grants.yaml: grants[0].expires: expires must be an ISO date (YYYY-MM-DD), got 'next year'" in result.stderr
    assert "domains/fraud/grants.yaml: grants[0].colour: Extra inputs are not permitted" in result.stderr


def test_unclassified_column(domains_copy):
    path = domains_copy / "domains/claims/contracts/claim_events.yaml"
    edit_yaml(path, lambda c: c["schema"][0]["properties"][2].pop("classification"))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/claims/contracts/claim_events.yaml: schema[claim_events].properties[event_type].classification: [columns_classified] column 'event_type' has no classification" in result.stderr


def test_public_product_without_quality_rules_or_sla(domains_copy):
    def change(c):
        c["customProperties"] = [{"property": "accessLevel", "value": "public"}]
        c.pop("slaProperties")

    edit_yaml(domains_copy / "domains/analytics/contracts/loss_ratio.yaml", change)
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "loss_ratio.yaml: schema[loss_ratio].quality: [public_products_have_quality_and_sla] a public product needs quality rules" in result.stderr
    assert "loss_ratio.yaml: slaProperties: [public_products_have_quality_and_sla] a public product needs a latency SLA" in result.stderr


def test_unmasking_pii_for_a_consumer_without_clearance(domains_copy):
    path = domains_copy / "domains/customer_care/domain.yaml"
    path.write_text(path.read_text().replace("clearances: [pii]", "clearances: []"))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/policies/grants.yaml: grants[4].unmasked: [sensitive_columns_masked] unmasks pii for 'customer_care', which holds no such clearance" in result.stderr


def test_a_domain_policy_violation(domains_copy):
    edit_yaml(domains_copy / "domains/fraud/contracts/fraud_scores.yaml", lambda c: c["description"].pop("limitations"))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "fraud_scores.yaml: description.limitations: [model_outputs_state_limitations] a model-derived product must state its limitations" in result.stderr
    assert "4 domain(s) loaded" in result.stdout  # fraud fails; policies, claims, customer_care and analytics load


def test_a_broken_domain_policy_file(domains_copy):
    (domains_copy / "domains/fraud/policies.py").write_text("from mesh_platform.governance.policies import policy\ndef broken(:\n")
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/fraud/policies.py: line 2: policies cannot load: SyntaxError" in result.stderr


def test_policies_report(domains_copy):
    result = run_mesh(["policies", "--json"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    names = {r["policy"] for r in report["results"]}
    assert {"owner_and_purpose", "columns_classified", "sensitive_columns_masked", "input_ports_granted", "model_outputs_state_limitations"} <= names
    assert all(r["passed"] for r in report["results"])

