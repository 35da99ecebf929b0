"""The privacy release service: the only identity that reads aggregate-only products.

A real service on loopback (:class:`mesh_platform.deployment.privacy_service.PrivacyService`) over the session's
materialized lake. The caller is the domain its token was issued to: a forged or missing token is
refused, a domain without an aggregate grant is refused whatever it claims in the request, and the
release debits the consumer's budget in the service's own ledger. A domain's own Dagster read of an
aggregate port goes through the service when its deployment configures one.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from mesh_platform.governance.privacy import Aggregate, PrivacyLedger, ReleaseRefused, count, request_release
from mesh_platform.deployment.privacy_service import PrivacyService

QUERY = Aggregate(group_by=["topic"], measures=[count()], epsilon=0.01).as_metadata()
PRODUCT = "customer_care.conversations"


@pytest.fixture
def service(materialized_mesh, settings, tmp_path, monkeypatch):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("MESH_PRIVACY_LEDGER", ledger)
    tokens = {"analytics-token": "analytics", "fraud-token": "fraud"}
    server = PrivacyService(0, tokens, settings.lake, open(tmp_path / "service.log", "w"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", PrivacyLedger(ledger)
    finally:
        server.shutdown()
        server.server_close()


def test_the_service_releases_to_the_domain_its_token_names(service):
    url, ledger = service
    frame, epsilon, remaining = request_release(url, "analytics-token", PRODUCT, 1, QUERY, "run-1", None)
    assert "dp_count" in frame.columns and len(frame) > 0
    assert epsilon == pytest.approx(0.01) and remaining > 0
    assert ledger.spent("analytics", PRODUCT) == pytest.approx(0.01)


def test_a_domain_without_an_aggregate_grant_is_refused_whatever_it_claims(service):
    url, ledger = service
    body = json.dumps({"product": PRODUCT, "major": 1, "query": QUERY, "consumer": "analytics"}).encode()
    request = urllib.request.Request(f"{url}/release", data=body, method="POST", headers={"Authorization": "Bearer fraud-token"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403 and "fraud" in json.loads(refused.value.read())["error"]
    assert ledger.spent("analytics", PRODUCT) == 0 and ledger.spent_by("fraud") == 0


@pytest.mark.parametrize("token", ["", "forged", "analytics"])
def test_forged_or_missing_tokens_are_refused(service, token):
    url, ledger = service
    with pytest.raises(ReleaseRefused, match="unknown or missing token"):
        request_release(url, token, PRODUCT, 1, QUERY, None, None)
    assert ledger.spent_by("analytics") == 0


def test_malformed_requests_are_refused_with_the_reason(service):
    url, _ = service
    for body, reason in [(b"not json", "malformed"), (json.dumps({"product": PRODUCT}).encode(), "malformed")]:
        request = urllib.request.Request(f"{url}/release", data=body, method="POST", headers={"Authorization": "Bearer analytics-token"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and reason in json.loads(refused.value.read())["error"]


def test_a_dagster_read_of_an_aggregate_port_asks_the_service(service, monkeypatch, tmp_path):
    """With a service configured, the consumer's process reads nothing itself (its lake here is an
    empty folder: what its storage keys reach of the product): the release, and the debit, happen in
    the service (its ledger), under the token's identity."""
    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.storage import publishing
    from mesh_platform.storage.lake import Lake

    url, ledger = service
    monkeypatch.setenv("MESH_PRIVACY_SERVICE", url)
    monkeypatch.setenv("MESH_PRIVACY_TOKEN", "analytics-token")
    contract = mesh_registry().get(PRODUCT)
    release = publishing.read_aggregate(Lake(str(tmp_path / "nothing")), "analytics", contract, QUERY, "run-2")
    assert len(release.frame) > 0 and release.columns
    assert ledger.spent("analytics", PRODUCT) == pytest.approx(0.01)
