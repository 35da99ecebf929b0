"""Reads that answer with less than a copy of the table, through the same governed decision: by key
(``InputPort(lookup=...)``) and in place (a dbt domain's DuckDB scanning the version's own files)."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from conftest import ROOT
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.foundations import metadata as md
from mesh_platform.governance.access import AccessDenied
from mesh_platform.products.ports import InputPort, resolve
from mesh_platform.storage import publishing
from mesh_platform.storage.lake import Lake
from test_governance import PII_CONTRACT


def test_a_lookup_key_must_be_a_column_the_port_reads():
    registry = ContractRegistry.discover(ROOT / "domains")
    with pytest.raises(ValueError, match="lookup key 'start_date' is not among the columns it reads of 'policies.policies'"):
        resolve(InputPort("policies.policies", major=1, columns=["policy_id", "product_line"], lookup="start_date"), registry, "claims")
    with pytest.raises(ValueError, match="cannot be read by key"):
        from mesh_platform.governance.privacy import Aggregate, count

        resolve(InputPort("customer_care.conversations", major=1, lookup="topic", aggregate=Aggregate(["topic"], [count()], 1.0)), registry, "analytics")
    port = resolve(InputPort("policies.policies", major=1, columns=["policy_id", "product_line"], lookup="policy_id"), registry, "claims")
    assert port.asset_in("claims").metadata[md.LOOKUP] == "policy_id"


@pytest.fixture
def people(tmp_path, monkeypatch):
    """``t.people`` published (full and masked) in a lake of its own; consumer ``x`` holds a grant
    without clearance (its email and birth year are pseudonymized, its notes removed)."""
    (tmp_path / "domains" / "t").mkdir(parents=True)
    (tmp_path / "domains" / "t" / "grants.yaml").write_text("grants:\n  - product: people\n    consumer: x\n    purpose: Lookups.\n    expires: 2099-01-01\n")
    monkeypatch.setenv("MESH_DOMAINS", str(tmp_path / "domains"))
    lake = Lake(str(tmp_path / "lake"))
    table = pa.table({"person_id": [f"p{i}" for i in range(1000)], "email": [f"{i}@example.com" for i in range(1000)],
                      "born": pa.array(range(1000), pa.int64()), "notes": ["n"] * 1000})
    publishing.publish(lake, PII_CONTRACT, table, home=str(tmp_path))
    return lake


def test_a_lookup_returns_the_rows_its_keys_name_and_nothing_the_grant_hides(people):
    found = publishing.read(people, "x", PII_CONTRACT, ["person_id", "email"], keys=("person_id", ["p3", "p7", "nobody"]))
    assert sorted(found.table.column("person_id").to_pylist()) == ["p3", "p7"]
    assert found.variant == "masked" and found.decision.masked == ["email"]
    # the keys are compared with what the consumer reads: a raw email probes nothing in the masked variant
    assert publishing.read(people, "x", PII_CONTRACT, ["person_id", "email"], keys=("email", ["3@example.com"])).table.num_rows == 0
    pseudonym = found.table.filter(pa.compute.equal(found.table.column("person_id"), "p3")).column("email")[0].as_py()
    again = publishing.read(people, "x", PII_CONTRACT, ["person_id", "email"], keys=("email", [pseudonym]))
    assert again.table.column("person_id").to_pylist() == ["p3"]
    # a column the grant removes cannot be looked up by, nor read
    with pytest.raises(AccessDenied, match="cannot look rows up by 'notes'"):
        publishing.read(people, "x", PII_CONTRACT, ["person_id"], keys=("notes", ["n"]))
    # keys of another type than the column's are an error naming it, not an empty answer
    with pytest.raises(ValueError, match="lookup of t.people by 'person_id'"):
        publishing.read(people, "x", PII_CONTRACT, ["person_id"], keys=("person_id", [object()]))
    assert publishing.read(people, "x", PII_CONTRACT, ["person_id"], keys=("person_id", [])).table.num_rows == 0


@pytest.mark.slow
def test_fraud_reads_only_the_policies_and_contacts_of_its_claims(materialized_mesh, settings):
    """Through Dagster: fraud's features read policies and contacts by key, each lookup an audited read."""
    from mesh_platform.mesh.instance import local_instance
    from mesh_platform.storage import delta

    instance = local_instance(settings)
    book = delta.read(Lake(settings.lake), Lake.port_path("policies", "policies", 1), "policies.policies", ["policy_id"])[0].num_rows
    for key, column in ((dg.AssetKey(["policies", "policies"]), "policy_id"), (dg.AssetKey(["customer_care", "claim_contacts"]), "claim_id")):
        lookups = []
        for record in instance.fetch_observations(key, limit=1000).records:
            meta = record.event_log_entry.asset_observation.metadata
            if record.event_log_entry.run_id in materialized_mesh.run_ids and md.LOOKUP in meta and meta[md.CONSUMER].value == "fraud":
                lookups.append(meta)
        assert lookups, f"no lookup of {key.to_user_string()} by fraud"
        for meta in lookups:
            assert meta[md.LOOKUP].value["column"] == column and meta[md.LOOKUP].value["keys"] > 0
            assert meta[md.READ_FOR].value.startswith("claim_features.")
            assert 0 < meta[md.ROWS].value <= meta[md.LOOKUP].value["keys"]
        if column == "policy_id":
            assert all(meta[md.ROWS].value < book for meta in lookups)


def test_a_read_in_place_names_the_files_and_columns_the_grant_gives(people, tmp_path):
    """The files of the variant the grant gives (masked), at the pinned version; a column the grant
    removes is refused as by a read; a consumer without a grant gets nothing; DuckDB scanning the
    files sees what a read returns."""
    import duckdb

    from mesh_platform.foundations.sql import quote_literal

    with pytest.raises(AccessDenied, match="notes are removed"):
        publishing.read_in_place(people, "x", PII_CONTRACT, ["person_id", "email", "notes"])
    found = publishing.read_in_place(people, "x", PII_CONTRACT, ["person_id", "email"])
    assert found.variant == "masked" and all("/v1_masked/" in f for f in found.files)
    assert found.columns == ["person_id", "email"] and found.rows == 1000 and found.version == 0
    files = ", ".join(quote_literal(f) for f in found.files)
    scanned = duckdb.connect().sql(f"SELECT person_id, email FROM read_parquet([{files}], union_by_name = true) ORDER BY person_id").to_arrow_table()
    copied = publishing.read(people, "x", PII_CONTRACT, ["person_id", "email"]).table.sort_by("person_id")
    assert scanned.column("email").to_pylist() == copied.column("email").to_pylist()
    with pytest.raises(AccessDenied):
        publishing.read_in_place(people, "y", PII_CONTRACT, ["person_id"])
    # a pinned version that is no longer kept fails like a read, never reads another
    with pytest.raises(Exception, match="version 5|no longer kept|not found|does not exist|Invalid"):
        publishing.read_in_place(people, "x", PII_CONTRACT, ["person_id", "email"], {"masked": 5})
