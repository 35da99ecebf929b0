"""`mesh serve`: products over HTTP and Arrow Flight, SQL over what the caller may read, all governed.

A real service on loopback over the session's materialized mesh (its lake, its Dagster instance),
with real tokens. Every refusal the issue lists is tried: files and extensions from SQL, writes,
ungranted products and columns, forged, expired, malformed and absent tokens, a query that never
ends, a response over the caller's quota, a vacuumed version, a malformed Flight ticket.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import yaml

from conftest import ROOT, run_mesh

CLAIMS_COLUMNS = ["claim_id", "product_line", "status", "amount_paid"]


@pytest.fixture(scope="module")
def served(materialized_mesh, settings):
    from mesh_platform.serving.run import start

    running = start(settings, ROOT / "domains")
    yield running
    running.stop()


def token(settings, domain, person=None, ttl=3600, now=None):
    from mesh_platform.serving.tokens import issue

    return issue(settings.home, domain, person, ttl, now)


def http(url, path, tok=None, body=None, accept="application/vnd.apache.arrow.stream"):
    headers = {"Accept": accept}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


def error(result) -> str:
    return json.loads(result[2])["error"]


def lake_table(settings, relpath):
    from deltalake import DeltaTable

    return DeltaTable(str(Path(settings.lake) / relpath)).to_pyarrow_table()


def test_a_product_in_every_format_over_http_and_flight(served, settings):
    from mesh_platform.serving.client import MeshClient

    tok = token(settings, "fraud")
    expected = lake_table(settings, "claims/claims/v1").select(CLAIMS_COLUMNS).to_pandas()
    open_claims = expected[expected["status"] == "open"].sort_values("claim_id").reset_index(drop=True)
    query = "?columns=" + ",".join(CLAIMS_COLUMNS) + "&filter=" + urllib.request.quote(json.dumps([["status", "=", "open"]]))

    status, kind, body = http(served.http.url, "/products/claims/claims" + query, tok)
    assert (status, kind) == (200, "application/vnd.apache.arrow.stream"), body[:300]
    got = pa.ipc.open_stream(body).read_all().to_pandas().sort_values("claim_id").reset_index(drop=True)
    assert got.equals(open_claims)
    import io

    import pandas as pd
    import pyarrow.parquet as pq

    _, _, parquet = http(served.http.url, "/products/claims/claims" + query, tok, accept="application/vnd.apache.parquet")
    assert len(pq.read_table(io.BytesIO(parquet))) == len(open_claims)
    _, _, csv = http(served.http.url, "/products/claims/claims" + query, tok, accept="text/csv")
    assert len(pd.read_csv(io.BytesIO(csv))) == len(open_claims)
    _, _, lines = http(served.http.url, "/products/claims/claims" + query, tok, accept="application/x-ndjson")
    rows = [json.loads(line) for line in lines.splitlines()]
    assert len(rows) == len(open_claims) and set(rows[0]) == set(CLAIMS_COLUMNS)

    for url in (served.http.url, served.flight.url):
        client = MeshClient(url, tok)
        frame = client.read("claims.claims", columns=CLAIMS_COLUMNS, filter=[["status", "=", "open"]])
        assert frame.sort_values("claim_id").reset_index(drop=True).equals(open_claims)
        ids = client.read("claims.claims", columns=["claim_id"], filter=[["status", "=", "open"]])  # filter on a column not returned
        assert list(ids.columns) == ["claim_id"] and sorted(ids["claim_id"]) == sorted(open_claims["claim_id"])


def test_sql_over_granted_products_matches_duckdb_on_the_table(served, settings):
    import duckdb
    import pandas as pd

    from mesh_platform.serving.client import MeshClient

    query = ("SELECT c.product_line, count(*) AS claims, sum(c.amount_paid) AS paid, sum(p.annual_premium) AS premium "
             "FROM claims.claims c JOIN policies.policies p USING (policy_id) GROUP BY 1 ORDER BY 1")
    claims, policies = lake_table(settings, "claims/claims/v1"), lake_table(settings, "policies/policies/v1")  # noqa: F841
    direct = duckdb.sql(query.replace("claims.claims", "claims").replace("policies.policies", "policies")).df()
    for url in (served.http.url, served.flight.url):
        got = MeshClient(url, token(settings, "analytics")).sql(query)
        pd.testing.assert_frame_equal(got, direct, check_dtype=False)


@pytest.mark.parametrize("query, status, says", [
    ("SELECT * FROM read_csv('/etc/passwd')", 400, "names no product"),
    ("SELECT count(*) FROM claims.claims, read_csv('/etc/passwd')", 403, "file system operations are disabled"),
    ("SELECT * FROM claims.claims WHERE claim_id IN (SELECT policyholder_id FROM read_parquet('{lake}/policies/policyholders/v1/*.parquet'))", 403, "disabled"),
    ("ATTACH '/tmp/mesh.db' AS x", 400, "only SELECT queries are served; this is a ATTACH statement"),
    ("INSTALL httpfs", 400, "this is a"),
    ("COPY (SELECT * FROM claims.claims) TO '/tmp/out.csv'", 400, "this is a COPY statement"),
    ("CREATE TABLE claims.mine AS SELECT 1", 400, "this is a CREATE statement"),
    ("SELECT 1; SELECT 2", 400, "one statement at a time"),
    ("SELECT full_name FROM policies.policyholders", 403, "has no grant for consumer 'analytics'"),
    ("SELECT topic FROM customer_care.conversations", 403, "differentially private aggregates only"),
    ("SELECT * FROM marketing.campaigns", 404, "no data product"),
])
def test_sql_that_reaches_outside_its_grants_is_refused_and_audited(served, settings, query, status, says):
    tok = token(settings, "analytics")
    result = http(served.http.url, "/sql", tok, {"query": query.format(lake=settings.lake)})
    assert result[0] == status, result[2][:400]
    assert says in error(result)


def test_tokens_forged_expired_malformed_or_absent_are_refused(served, settings, tmp_path):
    from mesh_platform.serving.tokens import issue

    forged = issue(str(tmp_path / "elsewhere"), "fraud")  # a key this deployment does not know
    expired = token(settings, "fraud", ttl=60, now=time.time() - 3600)
    cases = {
        None: "no token",
        "not-a-jwt": "malformed token",
        forged: "signature does not verify",
        expired: "has expired",
        token(settings, "marketing"): "names no domain of this mesh",
    }
    for tok, says in cases.items():
        result = http(served.http.url, "/products/claims/claims", tok)
        assert result[0] == 401 and says in error(result), (says, result)
    with pytest.raises(flight.FlightUnauthenticatedError, match="signature does not verify"):
        client = flight.FlightClient(served.flight.url)
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {forged}".encode())])
        client.do_get(flight.Ticket(b'{"product": "claims.claims"}'), options=options).read_all()


def test_reads_outside_the_grant_are_refused(served, settings):
    analytics = token(settings, "analytics")
    assert "has no grant for consumer 'analytics'" in error(http(served.http.url, "/products/policies/policyholders", analytics))
    assert "aggregates only" in error(http(served.http.url, "/products/customer_care/conversations", analytics))
    unknown_column = http(served.http.url, "/products/claims/claims?columns=claim_id,secret", analytics)
    assert unknown_column[0] == 400 and "no column(s) secret" in error(unknown_column)
    listed = json.loads(http(served.http.url, "/products", analytics)[2])
    access = {p["product"]: p["access"] for p in listed["products"]}
    assert access["claims.claims"] == "full" and access["policies.policyholders"] == "none"
    assert access["customer_care.conversations"] == "aggregate" and listed["consumer"] == "analytics"


def test_a_malformed_flight_ticket_is_refused(served, settings):
    client = flight.FlightClient(served.flight.url)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token(settings, 'fraud')}".encode())])
    for ticket in (b"\xff\xfe", b"[1, 2]", b'{"product": "claims.claims", "version": "latest"}'):
        with pytest.raises(flight.FlightServerError, match="malformed ticket"):
            client.do_get(flight.Ticket(ticket), options=options).read_all()


def test_aggregate_only_products_answer_differentially_private_queries(served, settings):
    from mesh_platform.governance.privacy import PrivacyLedger, ledger_url
    from mesh_platform.serving.client import MeshClient

    ledger = PrivacyLedger(ledger_url(settings.home))  # the service debits its home's ledger
    before = ledger.spent("analytics", "customer_care.conversations")
    frame = MeshClient(served.http.url, token(settings, "analytics")).aggregate(
        "customer_care.conversations", ["topic"], [{"kind": "count"}], epsilon=0.25)
    assert list(frame.columns[:2]) == ["topic", "dp_count"] and len(frame) > 0
    assert ledger.spent("analytics", "customer_care.conversations") == pytest.approx(before + 0.25)
    refused = http(served.http.url, "/aggregate", token(settings, "fraud"),
                   {"product": "customer_care.conversations", "group_by": ["topic"], "measures": [{"kind": "count"}], "epsilon": 0.1})
    assert refused[0] == 403


def test_every_request_is_audited_with_the_caller_from_its_token(served, settings):
    from mesh_platform.governance.audit import audit_records
    from mesh_platform.mesh.instance import local_instance

    query = "SELECT status, count(*) FROM claims.claims GROUP BY 1"
    result = http(served.http.url, "/sql", token(settings, "fraud", person="ada@acme-insurance.example"), {"query": query})
    assert result[0] == 200
    http(served.http.url, "/products/policies/policyholders", token(settings, "fraud"))
    with local_instance(settings) as instance:
        reads = audit_records(instance, [dg.AssetKey(["claims", "claims"]), dg.AssetKey(["policies", "policyholders"])])
        served_reads = [r for r in reads if r.kind == "read" and "mesh serve" in str(r.port) or r.kind == "read" and r.consumer == "fraud"]
        event = instance.fetch_observations(dg.AssetKey(["claims", "claims"]), limit=50).records
    sql_reads = [e.event_log_entry.asset_observation.metadata for e in event
                 if "mesh/query_hash" in e.event_log_entry.asset_observation.metadata]
    from mesh_platform.serving.audit import query_hash

    assert sql_reads and sql_reads[0]["mesh/query_hash"].value == query_hash(query)
    assert sql_reads[0]["mesh/person"].value == "ada@acme-insurance.example"
    assert sql_reads[0]["mesh/consumer"].value == "fraud"
    assert sql_reads[0]["mesh/columns_read"].value == ["status"]
    assert served_reads
    denied = [r for r in reads if r.kind == "denied" and r.product == "policies.policyholders" and r.consumer == "fraud"]
    assert denied and "no grant" in denied[-1].reason
    listed = run_mesh(["audit", "--consumer", "fraud"])
    assert "fraud DENIED" in listed.stdout and "policies.policyholders" in listed.stdout


@pytest.fixture(scope="module")
def limited(materialized_mesh, settings, tmp_path_factory):
    """A service over a copy of the domains whose analytics has small serving quotas and a grant of
    policyholders (masked: analytics is not cleared for pii)."""
    from mesh_platform.serving.run import start

    root = tmp_path_factory.mktemp("serve") / "domains"
    shutil.copytree(ROOT / "domains", root, ignore=shutil.ignore_patterns("__pycache__"))
    descriptor = root / "analytics" / "domain.yaml"
    raw = yaml.safe_load(descriptor.read_text())
    raw["quotas"] = {"serve_query_seconds": 2, "serve_rows_per_response": 50, "serve_concurrent_requests": 1}
    descriptor.write_text(yaml.safe_dump(raw, sort_keys=False))
    grants = root / "policies" / "grants.yaml"
    raw = yaml.safe_load(grants.read_text())
    raw["grants"].append({"product": "policyholders", "consumer": "analytics", "purpose": "Test: masked reads.", "expires": "2999-01-01"})
    grants.write_text(yaml.safe_dump(raw, sort_keys=False))
    care = root / "customer_care" / "grants.yaml"  # policies reads claim_contacts expired, claims a pending request
    raw = yaml.safe_load(care.read_text())
    raw["grants"] += [{"product": "claim_contacts", "consumer": "policies", "purpose": "Test: expired.", "expires": "2020-01-01"},
                      {"product": "claim_contacts", "consumer": "claims", "purpose": "Test: pending.", "status": "pending"}]
    care.write_text(yaml.safe_dump(raw, sort_keys=False))
    running = start(settings, root)
    yield running
    running.stop()


def test_masked_columns_for_a_consumer_not_cleared(limited, settings):
    tok = token(settings, "analytics")
    result = http(limited.http.url, "/sql", tok, {"query": "SELECT policyholder_id, full_name FROM policies.policyholders LIMIT 5"})
    assert result[0] == 200, result[2][:300]
    served = pa.ipc.open_stream(result[2]).read_all().to_pandas()
    real = set(lake_table(settings, "policies/policyholders/v1").column("full_name").to_pylist())
    assert len(served) == 5 and not set(served["full_name"]) & real  # pseudonymized, never the names


def test_an_expired_or_pending_grant_is_refused(limited, settings):
    expired = http(limited.http.url, "/products/customer_care/claim_contacts", token(settings, "policies"))
    assert expired[0] == 403 and "expired on 2020-01-01" in error(expired)
    pending = http(limited.http.url, "/sql", token(settings, "claims"), {"query": "SELECT count(*) FROM customer_care.claim_contacts"})
    assert pending[0] == 403, pending
    assert "pending" in error(pending).lower() or "not approved" in error(pending).lower(), error(pending)


def test_limits_stop_a_runaway_query_a_large_answer_and_extra_requests(limited, settings):
    tok = token(settings, "analytics")
    endless = "SELECT count(*) FROM claims.claims a, claims.claims b, claims.claims c, claims.claims d"
    started = time.monotonic()
    result = http(limited.http.url, "/sql", tok, {"query": endless})
    assert result[0] == 408 and "longer than 2 s" in error(result), result
    assert time.monotonic() - started < 30
    big = http(limited.http.url, "/products/claims/claims?columns=claim_id", tok)
    assert big[0] == 413 and "exceeds 50 rows" in error(big)
    small = http(limited.http.url, "/sql", tok, {"query": "SELECT claim_id FROM claims.claims LIMIT 10"})
    assert small[0] == 200

    hold = threading.Event()
    first: dict = {}

    def slow():
        first["result"] = http(limited.http.url, "/sql", tok, {"query": endless})
        hold.set()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    second = http(limited.http.url, "/sql", tok, {"query": "SELECT 1 AS one FROM claims.claims LIMIT 1"})
    thread.join(timeout=60)
    assert second[0] == 429 and "serve_concurrent_requests is 1" in error(second)


def test_a_version_read_and_a_vacuumed_version_refused(served, settings, tmp_path):
    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.storage import delta, publishing
    from mesh_platform.storage.lake import Lake
    from mesh_platform.serving.service import MeshService, Refused
    from mesh_platform.serving.tokens import Caller

    lake = Lake(str(tmp_path / "lake"))
    contract = mesh_registry().get("claims.claims")
    table = lake_table(settings, "claims/claims/v1")
    publishing.publish(lake, contract, table.slice(0, 10))
    publishing.publish(lake, contract, table.slice(0, 20))
    with dg.instance_for_test() as instance:
        service = MeshService(lake, ROOT / "domains", instance)
        caller = Caller("fraud", "fraud", 0)
        first = service.read(caller, "claims.claims", version=0, columns=["claim_id"])
        assert sum(b.num_rows for b in first.batches) == 10
        first.close()
        delta.vacuum(lake, "claims/claims/v1", "claims.claims v1", versions=1, days=None, grace_seconds=0)
        with pytest.raises(Refused, match="version 0 is no longer kept") as refused:
            service.read(caller, "claims.claims", version=0)
        assert refused.value.status == 410
        latest = service.read(caller, "claims.claims", columns=["claim_id"])
        assert sum(b.num_rows for b in latest.batches) == 20
        latest.close()


def test_mesh_tokens_issue_prints_the_token_last(settings):
    result = run_mesh(["tokens", "issue", "fraud", "--ttl", "60"])
    assert result.returncode == 0, result.stderr
    import jwt

    claims = jwt.decode(result.stdout.strip().splitlines()[-1], options={"verify_signature": False})
    assert claims["mesh_domain"] == "fraud" and claims["exp"] - claims["iat"] == 60
    assert run_mesh(["tokens", "issue", "marketing"]).returncode == 1
