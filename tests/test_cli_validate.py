"""`mesh validate` over deliberately broken copies of the project."""

from __future__ import annotations

import pytest

from conftest import copy_env, run_mesh


def validate(project, *args):
    # a lake of its own (empty): a consumer of a broken contract would otherwise load against what the
    # session's lake last published (tests/test_hostile_files.py covers that)
    return run_mesh(["validate", *args], env={**copy_env(project), "MESH_LAKE": str(project / "lake")}, cwd=project)


def test_mistyped_logical_type_is_refused_naming_the_file(domains_copy):
    path = domains_copy / "domains" / "claims" / "contracts" / "claims.yaml"
    path.write_text(path.read_text().replace("logicalType: number", "logicalType: numbr", 1))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/claims/contracts/claims.yaml: schema[claims].properties[amount_claimed].logicalType" in result.stderr
    assert "(got 'numbr')" in result.stderr
    # the consumers of the broken product say why they cannot load
    assert "domains/fraud/definitions.py: claim_features.inputs[claims]: the contract of 'claims.claims'" in result.stderr
    # domains that do not depend on it still load
    assert "2 domain(s) loaded" in result.stdout


def test_missing_id_is_refused_naming_the_file(domains_copy):
    path = domains_copy / "domains" / "policies" / "contracts" / "policyholders.yaml"
    path.write_text(path.read_text().replace("id: policies.policyholders\n", ""))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/policies/contracts/policyholders.yaml: id: required field is missing" in result.stderr


def test_wrong_major_pin_is_refused(domains_copy):
    path = domains_copy / "domains" / "policies" / "contracts" / "policies.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: 2.0.0", 1))
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/claims/definitions.py: claims.inputs[policies]: pins major version 1 of 'policies.policies', but its contract is at version 2.0.0" in result.stderr


def test_a_domain_that_fails_to_import_is_reported_and_the_rest_load(domains_copy):
    path = domains_copy / "domains" / "analytics" / "definitions.py"
    path.write_text(path.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    result = validate(domains_copy)
    assert result.returncode == 1
    assert "domains/analytics/definitions.py: line" in result.stderr and "broken on purpose" in result.stderr
    assert "4 domain(s) loaded" in result.stdout


def test_validate_named_files(domains_copy, tmp_path):
    good = domains_copy / "domains" / "claims" / "contracts" / "claims.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("kind: DataContract", "kind: DataContrakt"))
    result = validate(domains_copy, str(good), str(bad))
    assert result.returncode == 1
    assert "bad.yaml: kind: Input should be 'DataContract' (got 'DataContrakt')" in result.stderr
    assert "1 of 2 contract file(s) valid" in result.stdout
    assert validate(domains_copy, str(good)).returncode == 0
