"""Private intermediates are classified by their own contract; no raw PII is stored in them.

A careless domain keeps copies of contact details privately: the write is refused (the last good
version stays), unless the column is classified ``pii``, in which case it is stored pseudonymized.
Contracts that cannot hold (an object with pii, a missing private contract) fail the domain at load.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mesh_platform import Domain
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.products.domain import DomainDefinitionError
from mesh_platform.storage.io_manager import MeshIOManager

HEADER = "apiVersion: v3.1.0\nkind: DataContract\nid: careless.{name}\nname: {name}\nversion: 1.0.0\nstatus: active\ndomain: careless\n"


def _contract(root: Path, name: str, body: str) -> Path:
    path = root / "contracts" / "private" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.format(name=name) + body)
    return path


@pytest.fixture
def careless(tmp_path):
    root = tmp_path / "domains" / "careless"
    root.mkdir(parents=True)
    (root / "domain.yaml").write_text("name: careless\nkind: consumer-aligned\ndescription: test\nteam: T\nowners: [team:t]\n")
    _contract(root, "notes", "schema:\n  - name: notes\n    properties:\n"
              "      - {name: claim_id, logicalType: string, classification: internal}\n"
              "      - {name: note, logicalType: string, classification: internal}\n")
    _contract(root, "contacts", "schema:\n  - name: contacts\n    properties:\n"
              "      - {name: claim_id, logicalType: string, classification: internal}\n"
              "      - {name: email, logicalType: string, classification: pii}\n"
              "      - {name: phone, logicalType: string, classification: pii, customProperties: [{property: masking, value: remove}]}\n")
    _contract(root, "model", "schema:\n  - name: model\n    physicalType: object\n    properties:\n"
              "      - {name: weights, logicalType: array, classification: internal}\n")
    return root, ContractRegistry.discover(tmp_path / "domains")


def _declare(domain: Domain, state: dict) -> None:
    @domain.asset("notes")
    def notes() -> pd.DataFrame:
        return state["notes"]

    @domain.asset("contacts")
    def contacts() -> pd.DataFrame:
        return pd.DataFrame({"claim_id": ["C1", "C2"], "email": ["olivia.smith@example.com", None], "phone": ["+44 20 7946 0958", "020 7946 0000"]})

    @domain.asset("model")
    def model() -> dict:
        return state["model"]


def test_private_writes_are_held_to_their_contract(careless, tmp_path):
    root, registry = careless
    domain = Domain.load(root / "definitions.py")
    state = {"notes": pd.DataFrame({"claim_id": ["C1", "C2"], "note": ["called back", "CLM-0008911 reopened 2026-06-30"]}), "model": {"weights": [0.1, 0.2]}}
    _declare(domain, state)
    assets, _ = domain.build_assets(registry)
    lake = tmp_path / "lake"
    resources = {"io_manager": MeshIOManager(lake=str(lake), home=str(tmp_path / "home"))}  # the home keeps the masking key

    # the UI shows what a private asset keeps: its classified columns and its contract
    notes_asset = next(a for a in assets if a.key == dg.AssetKey(["careless", "notes"]))
    spec = next(iter(notes_asset.specs))
    assert [c.name for c in spec.metadata["dagster/column_schema"].columns] == ["claim_id", "note"]
    contacts_spec = next(iter(next(a for a in assets if a.key == dg.AssetKey(["careless", "contacts"])).specs))
    assert contacts_spec.tags["mesh/classification"] == "pii"

    with dg.instance_for_test() as instance:
        assert dg.materialize(assets, resources=resources, instance=instance).success
        stored = pq.read_table(lake / "careless/_private/contacts/data.parquet").to_pandas()
        assert list(stored.columns) == ["claim_id", "email"]  # phone: masking remove
        assert stored["email"][0].startswith("pseud:") and pd.isna(stored["email"][1])
        assert not any("@" in str(v) for v in stored["email"])
        good = (lake / "careless/_private/notes/data.parquet").read_bytes()

        # contact details in a column the contract does not classify: refused, nothing replaced
        state["notes"] = pd.DataFrame({"claim_id": ["C1", "C2", "C3"], "note": ["mail me at olivia.smith@example.com", "ring (555) 123-4567", "ok"]})
        bad = dg.materialize([notes_asset], resources=resources, instance=instance, raise_on_error=False)
        assert not bad.success
        error = next(e for e in bad.all_events if e.is_step_failure).step_failure_data.error.cause
        assert error.cls_name == "PrivateDataRefused"
        assert "column 'note' holds email addresses or phone numbers in 2 row(s)" in error.message
        assert "contracts/private/notes.yaml" in error.message
        assert (lake / "careless/_private/notes/data.parquet").read_bytes() == good

        # an object that does not match its declaration is refused too
        state["model"] = {"weights": [0.1], "training_rows": pd.DataFrame({"email": ["a@b.example"]})}
        model_asset = next(a for a in assets if a.key == dg.AssetKey(["careless", "model"]))
        wrong = dg.materialize([model_asset], resources=resources, instance=instance, raise_on_error=False)
        assert not wrong.success
        error = next(e for e in wrong.all_events if e.is_step_failure).step_failure_data.error.cause
        assert "not declared training_rows" in error.message


def test_private_contracts_that_cannot_hold_fail_the_domain_at_load(careless):
    root, registry = careless
    _contract(root, "model", "schema:\n  - name: model\n    physicalType: object\n    properties:\n"
              "      - {name: holder_email, logicalType: string, classification: pii}\n")
    _contract(root, "orphan", "schema:\n  - name: orphan\n    properties:\n      - {name: a, logicalType: string}\n")
    domain = Domain.load(root / "definitions.py")
    _declare(domain, {})

    @domain.asset("unclassified")
    def unclassified() -> pd.DataFrame:  # pragma: no cover - never run
        return pd.DataFrame()

    with pytest.raises(DomainDefinitionError) as info:
        domain.build_assets(registry)
    problems = {(Path(p.file).name, p.field): p.message for p in info.value.problems}
    assert "cannot be kept in an opaque object" in problems[("model.yaml", "schema[model].properties[holder_email].classification")]
    assert "no private asset 'orphan' is declared" in problems[("orphan.yaml", "name")]
    assert "private asset careless/unclassified has no contract" in problems[("unclassified.yaml", "")]


def test_demo_private_assets_are_classified():
    """Every private asset of the demo mesh has a contract and shows it."""
    from mesh_platform.mesh.workspace import Mesh

    mesh = Mesh.load()
    assert not mesh.problems
    for loaded in mesh.domains:
        graph = loaded.defs.resolve_asset_graph()
        for key in graph.materializable_asset_keys:
            node = graph.get(key)
            if node.tags.get("mesh/type") == "intermediate":
                assert node.metadata["mesh/private_contract"].endswith(f"contracts/private/{key.path[-1]}.yaml"), key
