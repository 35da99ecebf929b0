"""Storage agrees with the grants, checked by the storage itself.

An S3 server on loopback enforces IAM (moto's server mode, see ``s3_server.py``). Each domain of the
demo mesh gets an IAM user holding exactly the policy document ``mesh iam`` generates for it
(:func:`policies_for`, the real generator), and so does the platform's privacy role. The lake is
seeded with every port (full and masked variants) and every domain's ``_private/`` area. Then
every identity tries every object: reads, overwrites, deletes. A port is a Delta table (a folder: data
files and ``_delta_log/``), seeded as a real one; its grant covers every object under its folder. The server must allow exactly

- writes (and deletes) under the identity's own prefix, nowhere else;
- reads of its own objects and of the port variants the platform's access decisions give it
  (``authorize``: full when cleared for the sensitive columns it reads, masked otherwise; nothing for
  aggregate-only grants, whose product only ``mesh-privacy`` reads),

and refuse everything else with ``AccessDenied``: another domain's private area, a port without a
grant, the full variant where only the masked one is granted. The expectation is computed from the
access decisions, not read back from the policy documents, so a generator that drifts from the
grants fails here.

Two grant sets run: the demo's, and the same mesh after the policies domain withdraws
``unmasked: [pii]`` from customer_care's grant on ``policyholders`` (customer_care must then get
the masked variant only, and be refused the full one).

What moto does not evaluate: IAM ``Condition`` operators other than ``StringEquals`` are ignored,
so the generated ``s3:prefix`` conditions on ``s3:ListBucket`` are not enforced here (a domain can
list, not read, any key of the bucket). AWS evaluates them; the strict-xfail test below records the
gap and fails as soon as moto starts enforcing them, so the marker can go.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from conftest import ROOT
from s3_server import Credentials, S3Server

from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.governance.access import authorize
from mesh_platform.deployment.iam import policies_for
from mesh_platform.governance.masking import sensitive_columns
from mesh_platform.storage import delta
from mesh_platform.storage.lake import Lake
from mesh_platform.products.ports import resolve
from mesh_platform.mesh.workspace import Mesh

PREFIX = "lake"
PRIVACY = "mesh-privacy"
SERVE = "mesh-serve"  # `mesh serve`: read-only on every output port, full and masked (docs/serving.md)
REPORTS = "mesh-reports"  # `mesh reports serve`: read-only on the quality reports (docs/quality.md)
GRANT_WITHDRAWN = "    unmasked: [pii]\n"  # policies' grant of policyholders to customer_care


@dataclass
class Scenario:
    name: str
    bucket: str
    documents: dict[str, dict]  # identity -> its generated policy document
    identities: dict[str, Credentials]  # identity -> its access key
    expected_reads: dict[str, set[str]]  # identity -> lake-relative keys of others it may read
    seeded: dict[str, bytes]  # lake-relative key -> content

    @property
    def lake(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def key(self, rel: str) -> str:
        return f"{PREFIX}/{rel}"

    def policy(self, who: str) -> str:
        """The identity's document with the bucket name left out, to compare across scenarios."""
        return json.dumps(self.documents[who], sort_keys=True).replace(self.bucket, "<bucket>")


def _port_tables(mesh: Mesh) -> list[str]:
    """Every port's table folder (and its masked variant's), as the platform lays them out."""
    folders = []
    for loaded in mesh.domains:
        domain = loaded.domain
        for name, (contract, _) in domain.products.items():
            folders.append(Lake.port_path(domain.name, name, contract.major))
            if sensitive_columns(contract):
                folders.append(Lake.port_path(domain.name, name, contract.major, variant="masked"))
    return folders


def _lake_objects(mesh: Mesh) -> list[str]:
    """Every domain's private area, as the platform lays them out (ports are seeded as Delta tables)."""
    keys = []
    for loaded in mesh.domains:
        domain = loaded.domain
        private = [d.name for d in domain.declarations.values() if not d.is_product] or ["scratch"]
        for asset in private:
            keys += [Lake.private_path(domain.name, asset), Lake.private_path(domain.name, asset, table=False)]
        for name in domain.products:  # a run's quality report and the page rendered from it
            keys += [f"{domain.name}/{name}/_quality/run-1.report.json", f"{domain.name}/{name}/_quality/run-1.html"]
    return keys


def _readable(rel: str, folders: set[str]) -> bool:
    return any(rel.startswith(f"{folder}/") for folder in folders)


def _content(rel: str) -> bytes:
    if rel.endswith(".pickle"):
        return pickle.dumps({"stored_at": rel})
    sink = io.BytesIO()
    pq.write_table(pa.table({"stored_at": [rel]}), sink)
    return sink.getvalue()


def _expected_reads(mesh: Mesh) -> dict[str, set[str]]:
    """From the platform's access decisions: which other domains' objects each identity may read."""
    registry = mesh_registry()
    reads: dict[str, set[str]] = {PRIVACY: set(), SERVE: set(), REPORTS: {f"{c.domain}/{c.name}/_quality" for c in registry.full.contracts}}
    for contract in [*registry.full.contracts, *registry.full.previous]:
        reads[SERVE].add(Lake.port_path(contract.domain, contract.name, contract.major))
        if sensitive_columns(contract):
            reads[SERVE].add(Lake.port_path(contract.domain, contract.name, contract.major, variant="masked"))
    for loaded in mesh.domains:
        consumer = loaded.domain.name
        reads[consumer] = set()
        for source in {p for ports in loaded.domain.input_ports.values() for p in ports}:  # private intermediates too
            port = resolve(source, registry, consumer)
            c = port.contract
            if source.aggregate is not None:
                reads[PRIVACY].add(Lake.port_path(c.domain, c.name, c.major))
            else:
                variant = authorize(consumer, c, port.columns).variant
                reads[consumer].add(Lake.port_path(c.domain, c.name, c.major, variant=variant))
    return reads


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    loaded = Mesh.load(ROOT / "workspace.yaml")
    assert not loaded.problems, loaded.problems
    return loaded


@pytest.fixture(scope="module")
def s3():
    with S3Server(iam=True) as server:
        yield server


def _scenario(s3: S3Server, mesh: Mesh, name: str) -> Scenario:
    bucket = f"acme-mesh-{name}-{time.time_ns() % 10**9}"
    documents = policies_for(mesh, f"s3://{bucket}/{PREFIX}")
    assert set(documents) == {d.domain.name for d in mesh.domains} | {PRIVACY, SERVE, REPORTS}
    admin = s3.client()
    admin.create_bucket(Bucket=bucket)
    seeded = {rel: _content(rel) for rel in _lake_objects(mesh)}
    for rel, body in seeded.items():
        admin.put_object(Bucket=bucket, Key=f"{PREFIX}/{rel}", Body=body)
    with pytest.MonkeyPatch.context() as mp:  # every port a real Delta table, written as admin
        for variable, value in s3.admin.env(s3.endpoint).items():
            mp.setenv(variable, value)
        lake = Lake(f"s3://{bucket}/{PREFIX}")
        for folder in _port_tables(mesh):
            delta.write(lake, folder, pa.table({"stored_at": [folder]}), folder, None)
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(PREFIX) + 1:]
            seeded.setdefault(rel, admin.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    identities = {who: s3.create_identity(f"{name}-{who}", document) for who, document in documents.items()}
    return Scenario(name, bucket, documents, identities, _expected_reads(mesh), seeded)


@pytest.fixture(scope="module")
def demo(s3, mesh) -> Scenario:
    scenario = _scenario(s3, mesh, "demo")
    # anchors, so the expectation itself cannot silently go empty
    assert "policies/policyholders/v1" in scenario.expected_reads["customer_care"]
    assert "claims/claims/v1" in scenario.expected_reads["fraud"]
    assert "claims/claim_events/v1" in scenario.expected_reads["fraud"]  # read by its private model (the labels)
    assert not any(k.startswith("customer_care/conversations/") for k in scenario.expected_reads["analytics"])
    assert scenario.expected_reads[PRIVACY] == {"customer_care/conversations/v1"}
    assert {"claims/claims/v1", "policies/policyholders/v1_masked"} <= scenario.expected_reads[SERVE]
    assert any(rel.startswith("claims/claims/v1/_delta_log/") for rel in scenario.seeded)
    assert "claims/claims/_quality" in scenario.expected_reads[REPORTS] and not any("/v" in r for r in scenario.expected_reads[REPORTS])
    return scenario


@pytest.fixture(scope="module")
def unmasking_withdrawn(s3, mesh, tmp_path_factory) -> Scenario:
    """The same mesh after policies withdraws customer_care's unmasking of pii on policyholders."""
    domains = tmp_path_factory.mktemp("grants") / "domains"
    shutil.copytree(ROOT / "domains", domains, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    grants = domains / "policies" / "grants.yaml"
    assert grants.read_text().count(GRANT_WITHDRAWN) == 1
    grants.write_text(grants.read_text().replace(GRANT_WITHDRAWN, ""))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MESH_DOMAINS", str(domains))  # grants and clearances are read from here
        scenario = _scenario(s3, mesh, "withdrawn")
    reads = scenario.expected_reads["customer_care"]
    assert "policies/policyholders/v1_masked" in reads
    assert "policies/policyholders/v1" not in reads
    return scenario


def _attempt(call) -> bool:
    """True when the server allowed the request, False when it refused it with AccessDenied."""
    try:
        call()
        return True
    except ClientError as e:
        # a HEAD response has no body, so its refusal carries only the status code
        if e.response["Error"]["Code"] not in ("AccessDenied", "403"):
            raise
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        return False


def _matrix(s3: S3Server, scenario: Scenario, identities: set[str] | None = None) -> None:
    bucket = scenario.bucket
    mismatches: list[str] = []
    counts = {"allowed": 0, "refused": 0}

    def check(who: str, what: str, rel: str, expected: bool, call) -> None:
        allowed = _attempt(call)
        counts["allowed" if allowed else "refused"] += 1
        if allowed != expected:
            mismatches.append(f"{who} {what} {rel}: {'allowed' if allowed else 'refused'}, expected {'allowed' if expected else 'refused'}")

    domains = sorted({rel.split("/", 1)[0] for rel in scenario.seeded})
    for who, credentials in scenario.identities.items():
        if identities is not None and who not in identities:
            continue
        client = s3.client("s3", credentials)
        for rel, body in scenario.seeded.items():
            key = scenario.key(rel)
            own = rel.startswith(f"{who}/")
            check(who, "GET", rel, own or _readable(rel, scenario.expected_reads[who]), lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
            check(who, "PUT", rel, own, lambda: client.put_object(Bucket=bucket, Key=key, Body=body))
            if not own:
                check(who, "DELETE", rel, False, lambda: client.delete_object(Bucket=bucket, Key=key))
        for domain in domains:  # a new object in every domain's private area
            key = scenario.key(f"{domain}/_private/written-by-{who}/data.parquet")
            check(who, "PUT new", key, domain == who, lambda: client.put_object(Bucket=bucket, Key=key, Body=b"x"))
            if domain == who:
                check(who, "DELETE own", key, True, lambda: client.delete_object(Bucket=bucket, Key=key))
            upload = {}
            check(who, "multipart upload", key, domain == who, lambda: upload.update(client.create_multipart_upload(Bucket=bucket, Key=key)))
            if upload:
                check(who, "abort multipart", key, True, lambda: client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"]))
        # the own prefix ends at its slash: a sibling key that merely starts with the name is foreign
        shadow = scenario.key(f"{who}_shadow/data.parquet")
        check(who, "PUT next to own prefix", shadow, False, lambda: client.put_object(Bucket=bucket, Key=shadow, Body=b"x"))
        # nothing beyond objects: no bucket administration, no changing one's own policy
        check(who, "ListAllMyBuckets", "-", False, lambda: client.list_buckets())
        check(who, "PutBucketPolicy", bucket, False, lambda: client.put_bucket_policy(Bucket=bucket, Policy='{"Version":"2012-10-17","Statement":[]}'))
        check(who, "DeleteBucket", bucket, False, lambda: client.delete_bucket(Bucket=bucket))
        iam = s3.client("iam", credentials)
        me = f"{scenario.name}-{who}"
        check(who, "iam:PutUserPolicy", me, False, lambda: iam.put_user_policy(UserName=me, PolicyName="more", PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'))
        check(who, "iam:CreateAccessKey", "admin", False, lambda: iam.create_access_key(UserName="admin"))
    assert not mismatches, f"{len(mismatches)} request(s) the storage decided against the grants:\n" + "\n".join(mismatches)
    assert counts["allowed"] > 0 and counts["refused"] > 0, counts

    # refused writes and deletes left nothing behind: every object is as seeded, no stray keys
    admin = s3.client()
    for rel, body in scenario.seeded.items():
        assert admin.get_object(Bucket=bucket, Key=scenario.key(rel))["Body"].read() == body, rel
    stray = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", []) if "/written-by-" in o["Key"] or "_shadow/" in o["Key"]]
    assert stray == []


def test_each_domain_reaches_exactly_what_the_grants_give(s3, demo):
    _matrix(s3, demo)


def test_withdrawn_unmasking_leaves_only_the_masked_variant_readable(s3, demo, unmasking_withdrawn):
    scenario = unmasking_withdrawn
    changed = {who for who in scenario.documents if scenario.policy(who) != demo.policy(who)}
    assert changed == {"customer_care"}  # the others' documents are the demo's, tested above
    _matrix(s3, scenario, changed)
    client = s3.client("s3", scenario.identities["customer_care"])
    full, masked = (scenario.key(f"policies/policyholders/{v}/_delta_log/00000000000000000000.json") for v in ("v1", "v1_masked"))
    for request in (client.get_object, client.head_object):
        assert _attempt(lambda: request(Bucket=scenario.bucket, Key=masked))
        assert not _attempt(lambda: request(Bucket=scenario.bucket, Key=full))


def test_the_platform_lake_reads_and_writes_with_a_domains_credentials(s3, demo, monkeypatch):
    """The platform's own storage path (pyarrow's S3FileSystem) under fraud's deployment credentials."""
    for name, value in demo.identities["fraud"].env(s3.endpoint).items():
        monkeypatch.setenv(name, value)
    lake = Lake(demo.lake)
    table, version = delta.read(lake, "claims/claims/v1", "claims.claims v1")
    assert table.to_pydict() == {"stored_at": ["claims/claims/v1"]} and version == 0
    model = Lake.private_path("fraud", "fraud_model", table=False)
    assert lake.read_object(model) == {"stored_at": model}
    base = delta.snapshot(lake, "fraud/fraud_scores/v1", "fraud.fraud_scores v1")
    assert delta.write(lake, "fraud/fraud_scores/v1", pa.table({"stored_at": ["by fraud"]}), "fraud.fraud_scores v1", base) == 1

    for refused in ("policies/policyholders/v1", "policies/policyholders/v1_masked"):
        with pytest.raises(delta.PortTableError, match="access denied"):
            delta.read(lake, refused, refused)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        lake.read_table("claims/_private/landed_claims/data.parquet")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        lake.read_object("claims/_private/landed_claims/data.pickle")
    with pytest.raises(Exception, match="(?i)access ?denied|403|forbidden"):
        delta.write(lake, "claims/claims/v1", pa.table({"stored_at": ["forged by fraud"]}), "claims.claims v1", delta.snapshot(lake, "claims/claims/v1", "claims.claims v1"))
    admin = s3.client()
    stored = {o["Key"] for o in admin.list_objects_v2(Bucket=demo.bucket, Prefix=demo.key("claims/claims/v1/")).get("Contents", [])}
    assert stored == {demo.key(rel) for rel in demo.seeded if rel.startswith("claims/claims/v1/")}  # nothing written


def test_the_io_manager_publishes_only_its_own_domains_ports(s3, demo, monkeypatch):
    """A Dagster materialization with claims' credentials publishes claims' port; with fraud's it is refused."""
    import dagster as dg
    import pandas as pd

    from mesh_platform.storage.io_manager import MeshIOManager

    contract = mesh_registry().get("claims.claim_events")
    frame = pd.DataFrame({"event_id": [1], "claim_id": ["C1"], "event_type": ["opened"], "occurred_at": pd.to_datetime(["2025-01-01"])})

    @dg.asset(key=["claims", "claim_events"], metadata={"mesh/contract_id": contract.id})
    def claim_events():
        return frame

    resources = {"io_manager": MeshIOManager(lake=demo.lake)}
    path = Lake.port_path("claims", "claim_events", contract.major)
    with dg.instance_for_test() as instance:
        for name, value in demo.identities["fraud"].env(s3.endpoint).items():
            monkeypatch.setenv(name, value)
        refused = dg.materialize([claim_events], resources=resources, instance=instance, raise_on_error=False)
        assert not refused.success
        failure = refused.get_step_failure_events()[0].step_failure_data.error
        assert "port claims.claim_events v1: access denied" in failure.to_string(), failure.to_string()
        log = f"{path}/_delta_log/00000000000000000000.json"
        assert s3.client().get_object(Bucket=demo.bucket, Key=demo.key(log))["Body"].read() == demo.seeded[log]
        assert "00000000000000000001.json" not in str(s3.client().list_objects_v2(Bucket=demo.bucket, Prefix=demo.key(path)))

        for name, value in demo.identities["claims"].env(s3.endpoint).items():
            monkeypatch.setenv(name, value)
        assert dg.materialize([claim_events], resources=resources, instance=instance).success
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_access_key)
    table, version = delta.read(Lake(demo.lake), path, "claims.claim_events v1")
    assert table.to_pandas()["event_type"].tolist() == ["opened"] and version == 1


@pytest.mark.xfail(strict=True, reason="moto ignores StringLike conditions, so the generated s3:prefix limits on ListBucket are not enforced")
def test_listing_is_limited_to_own_and_granted_prefixes(s3, demo):
    client = s3.client("s3", demo.identities["fraud"])
    assert _attempt(lambda: client.list_objects_v2(Bucket=demo.bucket, Prefix=demo.key("fraud/")))
    assert not _attempt(lambda: client.list_objects_v2(Bucket=demo.bucket, Prefix=demo.key("policies/_private/")))


def test_the_generator_refuses_a_full_object_with_columns_the_reader_is_not_cleared_for(mesh, tmp_path, monkeypatch):
    """S3 grants objects, not columns: customer_care is cleared for the pii it reads from policyholders,
    but once the product also holds a restricted column, the full object would hand it that column."""
    from mesh_platform.deployment.iam import StorageGrantError

    domains = tmp_path / "domains"
    shutil.copytree(ROOT / "domains", domains, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    contract = domains / "policies" / "contracts" / "policyholders.yaml"
    anchor = "      - name: customer_since\n"
    assert contract.read_text().count(anchor) == 1
    contract.write_text(contract.read_text().replace(anchor, (
        "      - name: national_id\n"
        "        logicalType: string\n"
        "        classification: restricted\n"
        "        description: National identity number.\n"
    ) + anchor))
    monkeypatch.setenv("MESH_DOMAINS", str(domains))
    with pytest.raises(StorageGrantError, match=r"'customer_care' reads policies\.policyholders unmasked .*national_id \(restricted\)") as refused:
        policies_for(mesh, "s3://acme-mesh-lake/lake")
    assert "policies/grants.yaml" in str(refused.value), str(refused.value)


def test_the_access_log_names_who_storage_refused(tmp_path):
    """The server, not the caller, records each request: a refusal of code that never calls the
    platform is in the log with the identity whose key signed it (``mesh audit --storage``)."""
    from mesh_platform.deployment.s3_server import read_access_log

    log = tmp_path / "access.jsonl"
    with S3Server(iam=True, access_log=log) as server:
        server.client().create_bucket(Bucket="lake")
        server.client().put_object(Bucket="lake", Key="policies/policyholders/v1/part-0.parquet", Body=b"rows")
        nobody = server.create_identity("fraud", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::lake/fraud/*"]}]})
        with pytest.raises(ClientError):
            server.client("s3", nobody).get_object(Bucket="lake", Key="policies/policyholders/v1/part-0.parquet")
        with pytest.raises(ClientError):
            server.client("s3", nobody).put_object(Bucket="lake", Key="policies/policyholders/v1/_delta_log/9.json", Body=b"{}")
        records = read_access_log(log, {nobody.access_key_id: "fraud", server.admin.access_key_id: "admin"})
    refused = [(r["identity"], r["method"], r["key"]) for r in records if r["status"] == 403]
    assert ("fraud", "GET", "policies/policyholders/v1/part-0.parquet") in refused
    assert ("fraud", "PUT", "policies/policyholders/v1/_delta_log/9.json") in refused
    assert ("admin", "PUT", "policies/policyholders/v1/part-0.parquet") in [(r["identity"], r["method"], r["key"]) for r in records if r["status"] == 200]


def test_the_reports_service_renders_reports_with_its_own_keys_and_serves_nothing_else(s3, demo, monkeypatch):
    """``mesh reports serve`` over the S3 lake as ``mesh-reports`` (the stack and Helm run it so that no
    run imports Great Expectations): a run's report becomes a Data Docs page on first request, the
    service writes nothing into the lake, and a port or private object is not a report it serves, nor
    one its keys may read."""
    import threading
    import urllib.error
    import urllib.request

    from mesh_platform.contracts.enforcement import arrow_schema
    from mesh_platform.quality.evaluate import evaluate
    from mesh_platform.quality.reports import make_server, save_report
    from mesh_platform.quality.rules import rules_for

    contract = mesh_registry().get("claims.claims")
    schema = arrow_schema(contract)
    table = pa.table({f.name: pa.array([None], f.type) for f in schema}, schema=schema)
    for variable, value in s3.admin.env(s3.endpoint).items():  # the run (here: admin) writes the report's data
        monkeypatch.setenv(variable, value)
    save_report(Lake(demo.lake), "claims/claims/_quality/run-2.report.json", evaluate(table, rules_for(contract), contract.id), contract.id)
    for variable, value in demo.identities[REPORTS].env(s3.endpoint).items():
        monkeypatch.setenv(variable, value)
    assert not _attempt(lambda: s3.client("s3", demo.identities[REPORTS]).get_object(Bucket=demo.bucket, Key=demo.key("claims/claims/v1/_delta_log/00000000000000000000.json")))

    server = make_server(demo.lake, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/{path}", timeout=180) as response:  # a first page imports GX
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        status, page = get("claims/claims/_quality/run-2.html")
        assert status == 200 and "<html" in page.lower() and contract.id in page
        assert get("claims/claims/_quality/run-2.html") == (200, page)  # kept in memory
        status, result = get("claims/claims/_quality/run-2.json")
        assert status == 200 and json.loads(result)["success"] is False  # required columns all null
        assert get("claims/claims/_quality/run-1.html")[0] == 200  # a page a run rendered itself, as stored
        for refused in ("claims/claims/v1/_delta_log/00000000000000000000.json", "claims/claims/_quality/run-2.report.json",
                        "claims/_private/landed_claims/data.parquet", "claims/claims/_quality/../v1/x", "claims/claims/_quality/none.html"):
            assert get(refused)[0] == 404, refused
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    stored = {o["Key"] for o in s3.client().list_objects_v2(Bucket=demo.bucket, Prefix=demo.key("claims/claims/_quality/")).get("Contents", [])}
    assert stored == {demo.key(f"claims/claims/_quality/{n}") for n in ("run-1.report.json", "run-1.html", "run-2.report.json")}  # wrote nothing
