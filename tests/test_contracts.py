"""Contract parsing: every shipped contract is valid; broken ones are refused naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mesh_platform.contracts import ContractError, load_contract
from mesh_platform.contracts.registry import ContractRegistry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "domains").glob("*/contracts/*.yaml"))
GOOD = ROOT / "domains" / "policies" / "contracts" / "policies.yaml"


def broken_copy(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(GOOD.read_text())
    edit(raw)
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ContractError) as info:
        load_contract(path)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_shipped_contracts_parse(path):
    contract = load_contract(path)
    assert contract.domain == path.parent.parent.name
    assert contract.name == path.stem
    assert contract.owners and contract.purpose and contract.columns
    assert all(c.logical_type and c.classification for c in contract.columns)


def test_typed_model_reads_odcs_fields():
    contract = load_contract(GOOD)
    assert contract.api_version == "v3.1.0" and contract.kind == "DataContract"
    assert (contract.id, contract.version, contract.major) == ("policies.policies", "1.0.0", 1)
    assert contract.primary_key == ["policy_id"]
    assert contract.column("annual_premium").logical_type == "number"
    assert contract.column("annual_premium").logical_type_options == {"minimum": 0}
    assert contract.column("product_line").quality[0].metric == "invalidValues"
    assert contract.column("product_line").quality[0].operator == ("mustBe", 0)
    assert contract.sla("latency").value == 1 and contract.sla("latency").unit == "d"
    assert contract.owners == ["team:policy-administration", "policy-data@acme-insurance.example"]
    assert contract.custom("accessLevel") == "internal"


def test_mistyped_logical_type_names_file_and_field(tmp_path):
    path = broken_copy(tmp_path, lambda c: c["schema"][0]["properties"][6].update(logicalType="decimal"))
    [problem] = problems_of(path)
    assert str(path.name) in problem
    assert "schema[policies].properties[annual_premium].logicalType" in problem
    assert "'decimal'" in problem


def test_missing_id_names_file_and_field(tmp_path):
    path = broken_copy(tmp_path, lambda c: c.pop("id"))
    [problem] = problems_of(path)
    assert "policies.yaml: id: required field is missing" in problem


def test_every_problem_is_reported_at_once(tmp_path):
    def edit(c):
        c["version"] = "1.0"
        c["schema"][0]["properties"][0]["requried"] = True
        c["schema"][0]["properties"][2].pop("logicalType")

    problems = problems_of(broken_copy(tmp_path, edit))
    text = "\n".join(problems)
    assert "version: version must be a semantic version" in text
    assert "schema[policies].properties[policy_id].requried: unknown field" in text


def test_missing_logical_type_is_a_platform_problem(tmp_path):
    path = broken_copy(tmp_path, lambda c: c["schema"][0]["properties"][2].pop("logicalType"))
    [problem] = problems_of(path)
    assert "schema[policies].properties[product_line].logicalType: every column needs a logicalType" in problem


def test_quality_rule_needs_exactly_one_operator(tmp_path):
    def edit(c):
        c["schema"][0]["properties"][2]["quality"][0]["mustBeLessThan"] = 3

    [problem] = problems_of(broken_copy(tmp_path, edit))
    assert "properties[product_line].quality[0]" in problem and "exactly one operator" in problem


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\nschema: [\n  - name: a\n")
    [problem] = problems_of(path)
    assert "bad.yaml: line" in problem and "not valid YAML" in problem


def test_dates_stay_strings_and_team_list_form_is_accepted(tmp_path):
    def edit(c):
        c["contractCreatedTs"] = "2026-01-15T09:00:00Z"
        c["team"] = [{"username": "a@example.com", "dateIn": "2024-01-15"}]

    path = broken_copy(tmp_path, edit)
    contract = load_contract(path)
    assert contract.contract_created_ts == "2026-01-15T09:00:00Z"
    assert contract.team.members[0].date_in == "2024-01-15"
    assert contract.owners == ["a@example.com"]


def test_registry_keeps_going_past_a_broken_contract(tmp_path):
    for domain in ("policies", "claims"):
        (tmp_path / domain / "contracts").mkdir(parents=True)
    (tmp_path / "policies" / "contracts" / "policies.yaml").write_text(GOOD.read_text())
    (tmp_path / "claims" / "contracts" / "claims.yaml").write_text("apiVersion: v3.1.0\nkind: DataContract\n")
    registry = ContractRegistry.discover(tmp_path)
    assert [c.id for c in registry] == ["policies.policies"]
    assert any("claims.yaml" in p.file and p.field == "id" for p in registry.problems)
    assert registry.get("policies/policies").id == "policies.policies"
    with pytest.raises(LookupError, match="cannot be read"):
        registry.get("claims.claims")
    with pytest.raises(LookupError, match="did you mean 'policies.policies'"):
        registry.get("policies.polices")
