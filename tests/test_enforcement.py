"""Structural contract enforcement before publish."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mesh_platform.contracts import ContractViolation, conform, load_contract

ROOT = Path(__file__).resolve().parents[1]
POLICIES = load_contract(ROOT / "domains" / "policies" / "contracts" / "policies.yaml")
EVENTS = load_contract(ROOT / "domains" / "claims" / "contracts" / "claim_events.yaml")


def good_policies(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policy_id": [f"POL-{i:07d}" for i in range(n)],
            "policyholder_id": [f"PH-{i:07d}" for i in range(n)],
            "product_line": ["auto"] * n,
            "sales_channel": ["online"] * n,
            "start_date": pd.to_datetime(["2025-01-01"] * n),
            "end_date": pd.to_datetime(["2026-01-01"] * n).date,
            "annual_premium": [100.0 + i for i in range(n)],
            "sum_insured": [1000] * n,
            "status": ["active"] * n,
        }
    )


def violations(df, contract=POLICIES) -> list[str]:
    with pytest.raises(ContractViolation) as info:
        conform(df, contract)
    assert "nothing was published" in str(info.value)
    return [str(v) for v in info.value.violations]


def test_conforming_data_becomes_the_contract_schema():
    table = conform(good_policies(), POLICIES)
    assert table.column_names == POLICIES.column_names
    assert table.schema.field("start_date").type == pa.date32()
    assert table.schema.field("sum_insured").type == pa.float64()
    assert not table.schema.field("policy_id").nullable
    assert table.schema.metadata[b"mesh.contract.version"] == b"1.0.0"


def test_missing_and_undeclared_columns():
    df = good_policies().drop(columns=["status"]).assign(email="x@example.com")
    found = violations(df)
    assert "column 'status': present: declared in the contract but missing from the data" in found
    assert "table: declared: columns not in the contract: email" in found


def test_wrong_type_names_column_and_offending_values():
    df = good_policies()
    df["annual_premium"] = ["100", "cheap", "120", "n/a", "99"]
    [found] = violations(df)
    assert found.startswith("column 'annual_premium': type: values are not number")
    assert "'cheap'" in found and "'n/a'" in found


def test_nulls_in_required_column():
    df = good_policies()
    df.loc[1, "policyholder_id"] = None
    assert violations(df) == ["column 'policyholder_id': required: 1 null value(s) in a required column"]


def test_duplicate_primary_key_with_examples():
    df = good_policies()
    df.loc[3, "policy_id"] = df.loc[0, "policy_id"]
    [found] = violations(df)
    assert "column 'policy_id': primaryKey: 1 duplicate key(s)" in found and "POL-0000000" in found


def test_integer_column_refuses_fractions_but_takes_whole_floats():
    df = pd.DataFrame({"event_id": [1.0, 2.0], "claim_id": ["a", "b"], "event_type": ["opened", "paid"], "occurred_at": pd.to_datetime(["2025-01-01", "2025-01-02"])})
    assert conform(df, EVENTS).column("event_id").type == pa.int64()
    df["event_id"] = [1.5, 2.0]
    [found] = violations(df, EVENTS)
    assert "column 'event_id': type" in found and "1.5" in found


def test_not_a_dataframe():
    assert "must be a pandas DataFrame" in violations([1, 2, 3])[0]
