"""Federated governance: access on every read, masking, differential privacy, audit, IAM."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_mesh
from mesh_platform.contracts import parse_contract
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.governance.access import AccessDenied, authorize
from mesh_platform.governance.masking import PREFIX, mask_table
from mesh_platform.governance.privacy import Aggregate, PrivacyBudgetExhausted, PrivacyLedger, count, mean

DOMAINS = ["policies", "claims", "customer_care", "fraud", "analytics"]
# Who may read what, as the demo's grants declare it (written out by hand, not derived).
ALLOWED = {
    "policies.policies": {"policies", "claims", "customer_care", "fraud", "analytics"},
    "policies.policyholders": {"policies", "customer_care"},
    "claims.claims": {"claims", "fraud", "analytics"},
    "claims.claim_events": {"claims", "fraud", "analytics"},
    "customer_care.conversations": {"customer_care"},  # analytics: aggregates only
    "customer_care.claim_contacts": {"customer_care", "fraud", "analytics"},
    "fraud.claim_features": {"fraud"},
    "fraud.fraud_scores": {"fraud", "analytics"},
    "analytics.claims_weekly": {"analytics"},
    "analytics.loss_ratio": {"analytics"},
    "analytics.fraud_hit_rate": {"analytics"},
    "analytics.contact_topics": {"analytics"},
    "analytics.contact_rate": {"analytics"},
}


def registry() -> ContractRegistry:
    return ContractRegistry.discover(ROOT / "domains")


@pytest.mark.parametrize("product", sorted(ALLOWED))
@pytest.mark.parametrize("consumer", DOMAINS)
def test_reads_succeed_exactly_where_policy_allows(consumer, product):
    contract = registry().get(product)
    if consumer in ALLOWED[product]:
        decision = authorize(consumer, contract, root=ROOT / "domains")
        assert decision.variant in ("full", "masked")
    else:
        with pytest.raises(AccessDenied) as info:
            authorize(consumer, contract, root=ROOT / "domains")
        assert repr(consumer) in str(info.value) and repr(product) in str(info.value)


def test_denial_names_consumer_product_and_missing_grant():
    with pytest.raises(AccessDenied) as info:
        authorize("fraud", registry().get("policies.policyholders"), root=ROOT / "domains")
    assert str(info.value) == (
        "domain 'fraud' may not read 'policies.policyholders': it is restricted and domains/policies/grants.yaml "
        "has no grant for consumer 'fraud' on product 'policyholders'"
    ) or "has no grant for consumer 'fraud' on product 'policyholders'" in str(info.value)


def test_expired_grant_stops_working():
    contract = registry().get("policies.policyholders")
    assert authorize("customer_care", contract, root=ROOT / "domains", today=date(2027, 6, 30)).variant == "full"
    with pytest.raises(AccessDenied, match="expired on 2027-06-30"):
        authorize("customer_care", contract, root=ROOT / "domains", today=date(2027, 7, 1))


def test_aggregate_grant_allows_no_rows():
    contract = registry().get("customer_care.conversations")
    with pytest.raises(AccessDenied, match="differentially private aggregates only"):
        authorize("analytics", contract, root=ROOT / "domains")
    assert authorize("analytics", contract, aggregate=True, root=ROOT / "domains").variant == "aggregate"


PII_CONTRACT = parse_contract(
    {
        "apiVersion": "v3.1.0", "kind": "DataContract", "id": "t.people", "name": "people", "version": "1.0.0",
        "status": "active", "domain": "t",
        "schema": [{"name": "people", "properties": [
            {"name": "person_id", "logicalType": "string", "classification": "internal"},
            {"name": "email", "logicalType": "string", "classification": "pii"},
            {"name": "born", "logicalType": "integer", "classification": "pii"},
            {"name": "notes", "logicalType": "string", "classification": "restricted"},
        ]}],
    },
    "people.yaml",
)
text = st.text(min_size=1, max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(text, text, st.integers(min_value=-10**12, max_value=10**12), text), min_size=1, max_size=40),
    key=st.binary(min_size=16, max_size=32),
)
def test_raw_sensitive_values_never_reach_an_uncleared_consumer(rows, key):
    table = pa.table(
        {
            "person_id": [r[0] for r in rows],
            "email": [r[1] for r in rows],
            "born": pa.array([r[2] for r in rows], pa.int64()),
            "notes": [r[3] for r in rows],
        }
    )
    masked, pseudonymized, removed = mask_table(table, PII_CONTRACT, key)
    assert pseudonymized == ["email", "born"] and removed == ["notes"]
    assert "notes" not in masked.column_names
    raw = {r[1] for r in rows} | {str(r[2]) for r in rows}
    for column in ("email", "born"):
        values = masked.column(column).to_pylist()
        assert all(v.startswith(PREFIX) for v in values)
        assert not raw & set(values)
        # no raw value inside a pseudonym either; a short run of hex digits ("1709") can occur in any
        # 32-digit hash by chance, so those are checked only when long enough to be evidence
        evidence = [r for r in raw if len(r) > 3 and not r.startswith(PREFIX) and (len(r) >= 12 or not set(r) <= set("0123456789abcdef"))]
        assert not any(r in v for v in values for r in evidence)
    # a keyed hash: equal inputs give equal pseudonyms (joins work), different inputs differ
    emails = table.column("email").to_pylist()
    pseud = masked.column("email").to_pylist()
    for (a, pa_), (b, pb) in zip(zip(emails, pseud), zip(emails[1:], pseud[1:])):
        assert (a == b) == (pa_ == pb)
    # the original column values survive for the producer: masking works on a copy
    assert table.column("email").to_pylist() == emails


def test_a_domain_that_only_removes_columns_needs_no_masking_key(monkeypatch):
    """Its deployment is not given the key (production refuses to run without one where it is used),
    so masking a product whose sensitive columns are all removed must not ask for it."""
    from mesh_platform.governance import masking

    def no_key(home=None):
        raise masking.MaskingKeyMissing("MESH_MASKING_KEY must be set in production (the pseudonymization key)")

    monkeypatch.setattr(masking, "masking_key", no_key)
    table = pa.table({"person_id": ["1"], "notes": ["n"]})
    masked, pseudonymized, removed = mask_table(table, PII_CONTRACT)
    assert (pseudonymized, removed, masked.column_names) == ([], ["notes"], ["person_id"])
    with pytest.raises(masking.MaskingKeyMissing):  # a column to pseudonymize still needs it
        mask_table(pa.table({"person_id": ["1"], "email": ["a@example.com"]}), PII_CONTRACT)


def test_pseudonyms_depend_on_the_key():
    table = pa.table({"person_id": ["1"], "email": ["a@example.com"], "born": [1], "notes": ["n"]})
    a = mask_table(table, PII_CONTRACT, b"k" * 32)[0].column("email")[0].as_py()
    b = mask_table(table, PII_CONTRACT, b"j" * 32)[0].column("email")[0].as_py()
    assert a != b


def test_privacy_budget_is_refused_once_spent(tmp_path):
    ledger = PrivacyLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    assert ledger.spend("analytics", "customer_care.conversations", 0.4, 1.0, "q") == pytest.approx(0.6)
    assert ledger.spend("analytics", "customer_care.conversations", 0.4, 1.0, "q") == pytest.approx(0.2)
    with pytest.raises(PrivacyBudgetExhausted, match="has spent 0.8 of its privacy budget 1"):
        ledger.spend("analytics", "customer_care.conversations", 0.4, 1.0, "q")
    assert ledger.spent("analytics", "customer_care.conversations") == pytest.approx(0.8)
    assert ledger.spent("fraud", "customer_care.conversations") == 0.0  # budgets are per consumer
    # durable: a new ledger object on the same store sees the spending
    assert PrivacyLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}").spent("analytics", "customer_care.conversations") == pytest.approx(0.8)


def test_dp_release_is_noisy_per_public_group_and_bounded():
    from mesh_platform.governance.privacy import compute

    contract = registry().get("customer_care.conversations")
    df = pd.DataFrame(
        {
            "policyholder_id": ["a"] * 50 + ["b"] * 3,
            "topic": ["billing"] * 53,
            "age_band": ["30-44"] * 53,
            "satisfaction": [5] * 53,
        }
    )
    counts = []
    for _ in range(5):  # the release is random: judge the median of a few, not one draw
        out = compute(df, contract, Aggregate(["topic", "age_band"], [count(), mean("satisfaction", 1, 5)], 2.0), "policyholder_id", 5)
        assert len(out) == 8 * 4  # every topic x age band, present or not
        assert (out["dp_count"] >= 0).all()
        counts.append(out[(out["topic"] == "billing") & (out["age_band"] == "30-44")].iloc[0]["dp_count"])
    assert sorted(counts)[2] < 30  # person 'a' contributes at most 5 rows (true bounded count 8), not 50


def test_dp_release_counts_a_row_with_a_missing_group_value_in_no_group():
    from mesh_platform.governance.privacy import _group_key, compute

    contract = registry().get("customer_care.conversations")
    df = pd.DataFrame(
        {
            "policyholder_id": [f"p{i}" for i in range(400)],
            "topic": pd.Series(["billing"] * 200 + [None] * 200, dtype="str"),
            "age_band": ["30-44"] * 400,
            "satisfaction": [4] * 400,
        }
    )
    keys = _group_key(df, ["topic", "age_band"])
    assert keys.iloc[0] == "billing\x1f30-44" and "\x1e" in keys.iloc[399]  # no public label matches the missing topic
    out = compute(df, contract, Aggregate(["topic", "age_band"], [count()], 50.0), "policyholder_id", 1)
    billing = out[(out["topic"] == "billing") & (out["age_band"] == "30-44")].iloc[0]["dp_count"]
    assert 180 <= billing <= 220  # the 200 rows with a topic (noise scale 1/50), not 400
    assert out["dp_count"].sum() < 300


@pytest.mark.slow
def test_audit_holds_every_read_and_publish_of_a_full_run(materialized_mesh):
    from mesh_platform.mesh.workspace import Mesh

    result = run_mesh(["audit", "--json"])
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["records"]
    first = {}
    for r in records:  # the first `mesh materialize` run of each domain
        if r["kind"] == "publish":
            first.setdefault(r["product"].split(".")[0], r["run_id"])
    initial = [r for r in records if r["run_id"] in set(first.values())]
    publishes = sorted(r["product"] for r in initial if r["kind"] == "publish")
    assert publishes == sorted(ALLOWED)
    mesh = Mesh.load(ROOT / "workspace.yaml")
    from mesh_platform.mesh.validation import input_ports

    expected_reads = sorted(pair for d in mesh.domains for pair in input_ports(d.domain))
    reads = sorted((r["consumer"], r["product"]) for r in initial if r["kind"] == "read")
    assert sorted(set(reads)) == expected_reads
    # one read per input, but a lookup records each call: fraud's features read claims' days, then the year by key
    assert [pair for pair in reads if reads.count(pair) > 1] == [("fraud", "claims.claims")] * 2
    # every publish names the Delta version it committed, every read the version it read
    assert all(r["version"] is not None for r in initial if r["kind"] in ("publish", "read"))
    aggregate = next(r for r in initial if r["kind"] == "read" and r["port"].endswith("/aggregate"))
    assert aggregate["consumer"] == "analytics" and aggregate["product"] == "customer_care.conversations"
    # every read says which of the consumer's assets and inputs made it (the contract gate names it)
    read_for = {(r["consumer"], r["product"], r["read_for"]) for r in initial if r["kind"] == "read"}
    assert {("fraud", "claims.claims", "claim_features.claims"), ("fraud", "claims.claim_events", "fraud_model.events"),
            ("analytics", "claims.claims", "dbt source claims.claims")} <= read_for
    assert all(r["read_for"] for r in initial if r["kind"] == "read")
    only = json.loads(run_mesh(["audit", "--json", "--consumer", "fraud", "--product", "claims.claims"]).stdout)["records"]
    assert only and all(r["consumer"] == "fraud" and r["product"] == "claims.claims" for r in only)


def test_iam_policies_are_generated_from_the_grants_and_up_to_date(tmp_path):
    result = run_mesh(["iam", "--lake", "s3://acme-mesh-lake/lake", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    committed = ROOT / "infra" / "iam"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(p.name for p in committed.glob("*.json"))
    for path in tmp_path.glob("*.json"):
        assert json.loads(path.read_text()) == json.loads((committed / path.name).read_text()), f"run `mesh iam` ({path.name})"
    fraud = json.loads((tmp_path / "fraud.json").read_text())
    reads = next(s for s in fraud["Statement"] if s["Sid"] == "ReadGrantedPorts")["Resource"]
    assert "arn:aws:s3:::acme-mesh-lake/lake/claims/claims/v1/*" in reads
    # read by a private intermediate (the model's labels), not by a product: storage must allow it too
    assert "arn:aws:s3:::acme-mesh-lake/lake/claims/claim_events/v1/*" in reads
    assert not any("policyholders" in r for r in reads)
    analytics = json.loads((tmp_path / "analytics.json").read_text())
    assert not any("conversations" in r for s in analytics["Statement"] for r in s["Resource"])
    privacy = json.loads((tmp_path / "mesh-privacy.json").read_text())
    assert privacy["Statement"][0]["Resource"] == ["arn:aws:s3:::acme-mesh-lake/lake/customer_care/conversations/v1/*"]
