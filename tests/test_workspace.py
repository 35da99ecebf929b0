"""workspace.yaml loaded the way `dagster dev` loads it: one gRPC code server per domain."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"policies", "claims", "customer_care", "fraud", "analytics"}
CROSS_DOMAIN_EDGES = {
    ("claims/claims", "policies/policies"),
    ("customer_care/conversations", "policies/policies"),
    ("customer_care/conversations", "policies/policyholders"),
    ("fraud/claim_features", "claims/claims"),
    ("fraud/fraud_model", "claims/claim_events"),  # the labels, read when the private model trains
    ("fraud/claim_features", "policies/policies"),
    ("fraud/claim_features", "customer_care/claim_contacts"),
    ("analytics/claims_weekly", "claims/claims"),
    ("analytics/loss_ratio", "claims/claims"),
    ("analytics/loss_ratio", "policies/policies"),
    ("analytics/fraud_hit_rate", "fraud/fraud_scores"),
    ("analytics/fraud_hit_rate", "claims/claim_events"),
    ("analytics/contact_rate", "claims/claims"),
    ("analytics/contact_rate", "customer_care/claim_contacts"),
    ("analytics/contact_topics", "customer_care/conversations"),
}
DBT_MODELS = {"analytics/claims_weekly", "analytics/loss_ratio", "analytics/fraud_hit_rate", "analytics/contact_rate"}

QUERY = """
query {
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  assetNodes {
    assetKey { path }
    groupName
    description
    isMaterializable
    tags { key value }
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    dependencyKeys { path }
    repository { location { name } }
    internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds } }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    metadataEntries {
      label
      ... on TableSchemaMetadataEntry { schema { columns { name type } } }
    }
  }
}
"""


@pytest.fixture(scope="module")
def request_context():
    with dg.instance_for_test() as instance:
        target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
        with WorkspaceProcessContext(instance=instance, workspace_load_target=target) as process:
            with process.create_request_context() as context:
                yield context


def test_every_domain_is_a_loaded_code_location(request_context):
    entries = request_context.get_code_location_entries()
    assert set(entries) == DOMAINS
    for name, entry in entries.items():
        assert entry.load_error is None, f"{name}: {entry.load_error.to_string() if entry.load_error else ''}"


def test_cross_location_dependencies_resolve(request_context):
    graph = request_context.asset_graph
    edges = set()
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            if parent.path[0] != key.path[0]:
                edges.add((key.to_user_string(), parent.to_user_string()))
    assert edges == CROSS_DOMAIN_EDGES
    for _, parent in edges:
        key = dg.AssetKey(parent.split("/"))
        assert key in graph.materializable_asset_keys  # resolved to the producer's asset, not left external
        assert graph.get_repository_handle(key).location_name == key.path[0]


def test_graphql_shows_owners_descriptions_and_column_schemas(request_context):
    data = execute_dagster_graphql(request_context, QUERY).data
    statuses = {e["name"]: e["locationOrLoadError"]["__typename"] for e in data["workspaceOrError"]["locationEntries"]}
    assert statuses == {d: "RepositoryLocation" for d in DOMAINS}
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    products = {k: n for k, n in nodes.items() if {"key": "mesh/type", "value": "product"} in n["tags"]}
    assert len(products) == 13
    for key, node in products.items():
        assert node["isMaterializable"] and node["repository"]["location"]["name"] == key.split("/")[0]
        assert node["groupName"] == key.split("/")[0]
        assert any("team" in o for o in node["owners"]), key
        assert node["description"], key
        schemas = [m for m in node["metadataEntries"] if m["label"] == "dagster/column_schema"]
        assert schemas and schemas[0]["schema"]["columns"], key
        assert node["internalFreshnessPolicy"]["failWindowSeconds"] > 0, key  # from the contract's latency SLA
        checks = {c["name"]: c["blocking"] for c in node["assetChecksOrError"]["checks"]}
        if key in DBT_MODELS:  # its checks are its dbt tests, generated from the ODCS contract
            assert any(name.startswith("unique_") or name == "primary_key_unique" for name in checks), key
        else:
            assert checks["contract_schema"] is True and len(checks) > 2, key
    consumers = {k.split("/")[0] for k, n in nodes.items() for d in n["dependencyKeys"] if d["path"][0] != k.split("/")[0]}
    assert consumers == {"claims", "customer_care", "fraud", "analytics"}
