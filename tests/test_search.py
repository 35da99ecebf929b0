"""Mesh-wide search: the index over the definitions, its refresh, ranking, and freshness from the instance."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from conftest import ROOT

from mesh_platform.mesh.search import SearchError, add_freshness, ensure_index, query, search


@pytest.fixture
def domains(tmp_path):
    """A writable copy of the demo's definitions (descriptors, contracts, grants)."""
    root = tmp_path / "domains"
    shutil.copytree(ROOT / "domains", root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return root


@pytest.fixture
def index(tmp_path):
    return tmp_path / "index" / "search.sqlite"


def keys(result) -> list[str]:
    return [h["key"] for h in result["hits"]]


def test_finds_domains_products_and_columns_by_any_of_their_words(domains, index):
    found = search("policyholder email", root=domains, path=index)
    assert keys(found)[0] == "policies/policyholders.email"
    assert found["hits"][0]["data"]["classification"] == "pii"
    assert keys(search("fraud", root=domains, path=index))[:2] == ["fraud", "fraud/fraud_scores"]  # the domain, then its product
    by_owner = keys(search("claims-data@acme-insurance.example", root=domains, path=index, kinds=("product",)))
    assert set(by_owner) == {"claims/claims", "claims/claim_events"}
    by_classification = keys(search("pii", root=domains, path=index, kinds=("column",)))
    assert "policies/policyholders.phone" in by_classification and all(k.startswith("policies/policyholders.") for k in by_classification)
    by_tag = keys(search("insurance", root=domains, path=index, kinds=("product",)))
    assert "claims/claims" in by_tag
    stems = keys(search("claim", root=domains, path=index, kinds=("product",)))
    assert "claims/claims" in stems  # "claim" finds "claims"
    words = keys(search("amount claimed", root=domains, path=index, kinds=("column",)))
    assert words[0] == "claims/claims.amount_claimed"  # a column name's parts are words too


def test_no_hit_with_every_word_falls_back_to_any_word(domains, index):
    found = search("loss zeppelin", root=domains, path=index)
    assert found["matched"] == "any" and "analytics/loss_ratio" in keys(found)


def test_the_index_is_rebuilt_when_definitions_change_and_only_then(domains, index):
    first = ensure_index(domains, index)
    assert first.rebuilt and first.documents > 100
    assert not ensure_index(domains, index).rebuilt
    assert keys(search("zeppelin", root=domains, path=index)) == []
    contract = domains / "claims" / "contracts" / "claims.yaml"
    contract.write_text(contract.read_text().replace("Every insurance claim", "Every zeppelin claim"))
    found = search("zeppelin", root=domains, path=index)
    assert found["index"]["rebuilt"] and keys(found) == ["claims/claims"]
    contract.unlink()
    gone = search("zeppelin", root=domains, path=index)
    assert gone["index"]["rebuilt"] and keys(gone) == []
    assert not any(k.startswith("claims/claims") for k in keys(search("claims", root=domains, path=index, limit=100)))


def test_a_broken_definition_is_reported_and_the_rest_still_found(domains, index):
    (domains / "fraud" / "contracts" / "fraud_scores.yaml").write_text("apiVersion: v3.1.0\nkind: DataContract\nid: [unclosed\n")
    (domains / "claims" / "domain.yaml").write_text("name: claims\nkind: nonsense\n")
    found = search("fraud", root=domains, path=index)
    files = {p["file"] for p in found["problems"]}
    assert any(f.endswith("fraud/contracts/fraud_scores.yaml") for f in files)
    assert any(f.endswith("claims/domain.yaml") for f in files)
    assert "fraud/claim_features" in keys(found) and "fraud/fraud_scores" not in keys(found)
    assert "claims/claims" in keys(search("claims", root=domains, path=index))  # its contracts are still indexed


@pytest.mark.parametrize("text", ["", "   ", "!!", "*", '"'])
def test_a_query_without_words_is_refused_before_anything_is_built(text, domains, index):
    with pytest.raises(SearchError, match="nothing to search for"):
        search(text, root=domains, path=index)
    assert not index.exists()


def test_query_syntax_in_the_text_is_taken_literally(domains, index):
    ensure_index(domains, index)
    for text in ['claims" OR "x', "NEAR(claims policies)", "policy_id:claims", "claims AND -fraud", "col*"]:
        hits, _ = query(index, text)  # never an FTS5 syntax error
        assert isinstance(hits, list)
    with pytest.raises(SearchError, match="unknown kind"):
        query(index, "claims", kinds=("table",))


def test_hits_carry_last_materialization_and_freshness_from_the_instance(domains, index):
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=dg.AssetKey(["claims", "claims"])))
    found = search("claims", instance=instance, root=domains, path=index, kinds=("product", "column"), limit=100)
    by_key = {h["key"]: h for h in found["hits"]}
    claims = by_key["claims/claims"]
    assert claims["freshness"] == "fresh" and claims["last_materialized"]
    assert claims["last_run_id"] == instance.get_latest_materialization_event(dg.AssetKey(["claims", "claims"])).run_id
    assert by_key["claims/claims.claim_id"]["last_materialized"] == claims["last_materialized"]  # a column: its product's
    assert by_key["claims/claim_events"]["freshness"] == "never materialized"
    later = [h for h in query(index, "claims", kinds=("product",))[0] if h.key == "claims/claims"]
    add_freshness(later, instance, now=datetime.now(timezone.utc) + timedelta(days=30))
    assert later[0].freshness == "stale"  # its contract's latency SLA is a day


def test_mesh_search_command(mesh_home):
    from click.testing import CliRunner

    from mesh_platform.cli import main

    result = CliRunner().invoke(main, ["search", "policyholder", "email", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["hits"][0]["key"] == "policies/policyholders.email"
    assert os.path.exists(found["index"]["path"]) and found["index"]["path"].startswith(str(mesh_home))
    text = CliRunner().invoke(main, ["search", "loss", "ratio"], catch_exceptions=False)
    assert text.exit_code == 0 and "product  analytics/loss_ratio" in text.output
    bad = CliRunner().invoke(main, ["search", "!!"])
    assert bad.exit_code == 2 and "nothing to search for" in bad.output
