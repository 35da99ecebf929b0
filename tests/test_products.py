"""Products from contracts: the Dagster assets every domain gets, and input-port wiring errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mesh_platform import Domain, DomainDefinitionError, InputPort
from mesh_platform.contracts.registry import ContractRegistry

ROOT = Path(__file__).resolve().parents[1]


def test_product_asset_metadata_is_derived_from_the_contract():
    from domains.claims.definitions import defs

    spec = defs.resolve_asset_graph().get(dg.AssetKey(["claims", "claims"]))
    assert spec.group_name == "claims"
    assert spec.owners == ["team:claims-operations", "claims-data@acme-insurance.example"]
    assert spec.description.startswith("Every insurance claim")
    assert "Contract `claims.claims` v1.0.0 (active)" in spec.description
    assert spec.kinds == {"pandas", "deltalake"}
    assert {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")} == {
        "mesh/domain": "claims",
        "mesh/type": "product",
        "mesh/status": "active",
        "mesh/classification": "confidential",
        "mesh/access": "internal",
        "mesh/policies": "passed",
    }
    schema = spec.metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns][:3] == ["claim_id", "policy_id", "policyholder_id"]
    claim_id = schema.columns[0]
    assert claim_id.type == "string" and claim_id.constraints.unique and not claim_id.constraints.nullable
    assert claim_id.tags == {"classification": "internal"}
    assert spec.metadata["mesh/contract_id"] == "claims.claims"
    assert spec.metadata["mesh/contract_version"] == "1.0.0"
    assert spec.code_version.startswith("1.0.0-")


def test_private_intermediates_are_not_products():
    from domains.claims.definitions import defs

    spec = defs.resolve_asset_graph().get(dg.AssetKey(["claims", "landed_claims"]))
    assert spec.tags["mesh/type"] == "intermediate"
    assert "mesh/contract_id" not in spec.metadata
    assert "Private to its domain" in spec.description


def test_input_ports_become_external_specs_and_inputs():
    from domains.fraud.definitions import defs

    graph = defs.resolve_asset_graph()
    features = graph.get(dg.AssetKey(["fraud", "claim_features"]))
    upstream = {k.to_user_string() for k in features.parent_keys}
    assert upstream == {"claims/claims", "policies/policies", "customer_care/claim_contacts"}
    model = graph.get(dg.AssetKey(["fraud", "fraud_model"]))  # a private intermediate reads a port too
    assert {k.to_user_string() for k in model.parent_keys} == {"fraud/claim_features", "claims/claim_events"}
    for key in features.parent_keys | {dg.AssetKey(["claims", "claim_events"])}:
        node = graph.get(key)
        assert not node.is_materializable  # external: materialized by its own domain's code location
        assert node.group_name == key.path[0]


def test_code_version_changes_with_the_contract(tmp_path):
    project = tmp_path / "domains"
    shutil.copytree(ROOT / "domains" / "policies", project / "policies", ignore=shutil.ignore_patterns("__pycache__"))
    registry = ContractRegistry.discover(project)
    domain = Domain.load(project / "policies" / "definitions.py")

    @domain.product("policies")
    def policies() -> pd.DataFrame:  # pragma: no cover - never run
        raise NotImplementedError

    @domain.product("policyholders")
    def policyholders() -> pd.DataFrame:  # pragma: no cover - never run
        raise NotImplementedError

    before = {a.key: a.code_versions_by_key[a.key] for a in domain.build_assets(registry)[0]}
    path = project / "policies" / "contracts" / "policies.yaml"
    path.write_text(path.read_text().replace("Annual premium in GBP.", "Annual premium in pounds sterling."))
    after = {a.key: a.code_versions_by_key[a.key] for a in domain.build_assets(registry)[0]}
    key = dg.AssetKey(["policies", "policies"])
    assert before[key] != after[key]
    assert before[dg.AssetKey(["policies", "policyholders"])] == after[dg.AssetKey(["policies", "policyholders"])]


@pytest.fixture
def consumer(tmp_path):
    """A registry with the real policies contracts and an empty consumer domain to declare into."""
    root = tmp_path / "domains"
    shutil.copytree(ROOT / "domains" / "policies" / "contracts", root / "policies" / "contracts")
    (root / "consumer").mkdir()
    (root / "consumer" / "domain.yaml").write_text(
        "name: consumer\nkind: consumer-aligned\ndescription: test\nteam: T\nowners: [team:t]\n"
    )
    (root / "consumer" / "contracts" / "private").mkdir(parents=True)
    (root / "consumer" / "contracts" / "private" / "x.yaml").write_text(
        "apiVersion: v3.1.0\nkind: DataContract\nid: consumer.x\nname: x\nversion: 1.0.0\nstatus: active\n"
        "domain: consumer\nschema:\n  - name: x\n    properties:\n      - {name: policy_id, logicalType: string}\n"
    )
    return Domain.load(root / "consumer" / "definitions.py"), ContractRegistry.discover(root)


def test_unknown_product_fails_at_load(consumer):
    domain, registry = consumer

    @domain.asset("x", inputs={"p": InputPort("policies.polices", major=1)})
    def x(p):  # pragma: no cover - never run
        return p

    with pytest.raises(DomainDefinitionError) as info:
        domain.build_assets(registry)
    [problem] = info.value.problems
    assert problem.field == "x.inputs[p]"
    assert problem.file.endswith("test_products.py")
    assert "no data product 'policies.polices' in the mesh (did you mean 'policies.policies'?)" in problem.message


def test_wrong_major_and_unknown_column_fail_at_load(consumer):
    domain, registry = consumer

    @domain.asset("x", inputs={"p": InputPort("policies.policies", major=2), "h": InputPort("policies/policyholders", major=1, columns=["policyholder_id", "shoe_size"])})
    def x(p, h):  # pragma: no cover - never run
        return p

    with pytest.raises(DomainDefinitionError) as info:
        domain.build_assets(registry)
    messages = {p.field: p.message for p in info.value.problems}
    assert "pins major version 2 of 'policies.policies', but its contract is at version 1.0.0" in messages["x.inputs[p]"]
    assert "columns it does not publish: shoe_size" in messages["x.inputs[h]"]


def test_product_without_contract_and_bad_local_input(consumer):
    domain, registry = consumer

    @domain.product("ghost", inputs={"up": "nowhere"})
    def ghost(up):  # pragma: no cover - never run
        return up

    with pytest.raises(DomainDefinitionError) as info:
        domain.build_assets(registry)
    text = str(info.value)
    assert "consumer/contracts/ghost.yaml: contract file not found" in text
    assert "ghost.inputs[up]: no asset 'nowhere' in domain 'consumer'" in text


def test_resolved_port_wires_columns_and_major(consumer):
    domain, registry = consumer

    @domain.asset("x", inputs={"p": InputPort("policies.policies", major=1, columns=["policy_id"])})
    def x(p):  # pragma: no cover - never run
        return p

    [asset], [external] = domain.build_assets(registry)
    assert external.key == dg.AssetKey(["policies", "policies"])
    assert external.owners == ["team:policy-administration", "policy-data@acme-insurance.example"]
    [input_def] = asset.op.ins.values()
    assert input_def.metadata == {
        "mesh/contract_id": "policies.policies", "mesh/port_major": 1, "mesh/columns": ["policy_id"], "mesh/consumer": "consumer",
        "mesh/read_for": "x.p",  # the asset and input that read, recorded with each audited read
    }
