"""The Dagster specs of a dbt domain, read from its prepared manifest without importing dbt.

Each model with a contract is a product whose spec comes from the same builder as a Python
product's (:func:`mesh_platform.products.specs.product_spec`: owners, description, column schema,
tags, freshness, automation); each dbt source is the producer's port it declares in ``meta.mesh``;
each dbt test attached to a model is an asset check of that model, named after the test and
blocking unless its severity is ``warn``.

Why not ``dagster_dbt``'s ``@dbt_assets``: importing ``dagster_dbt`` imports dbt-core and its
adapters (about 2.3 s), and every process that loads the analytics domain paid it: each ``mesh``
command, each code server, each run of another domain in the same process. The manifest is plain
JSON; reading it needs neither. dbt is imported where it runs (:func:`mesh_platform.dbt.assets.run`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import dagster as dg

from mesh_platform.dbt.plan import DbtPlan
from mesh_platform.products import partitions
from mesh_platform.products.ports import port_asset_key
from mesh_platform.products.specs import product_spec

KINDS = {"dbt", "duckdb"}  # what computes a dbt product (it is published as a Delta port like every other)


class DbtSpecs:
    """Asset and check specs of one dbt domain, and the check each dbt test reports to."""

    def __init__(self, domain: str, plan: DbtPlan):
        self.domain, self.plan = domain, plan
        self.contracts, self.ports = plan.contracts, plan.ports
        self.manifest: Mapping[str, Any] = plan.project.manifest
        reads_partitioned = any(partitions.of(port.contract) is not None for port in plan.ports.values())
        self.products = {name: product_spec(domain, contract, plan.owners, plan.policy_names, has_inputs=True, quotas=plan.quotas,
                                            reads_partitioned=reads_partitioned, catch_up=plan.catch_up,
                                            foreign=frozenset(port.key for port in plan.ports.values()))
                         for name, contract in plan.contracts.items()}

    def key_of(self, unique_id: str) -> dg.AssetKey | None:
        """The asset key of a dbt node: a source is the producer's port, a model its product."""
        if unique_id in self.ports:
            port = self.ports[unique_id]
            return port_asset_key(port.contract, port.current_major)
        node = self.models.get(unique_id)
        return dg.AssetKey([self.domain, node["name"]]) if node is not None else None

    @cached_property
    def models(self) -> dict[str, dict]:
        """The models that are products (they have a contract), by unique id."""
        return {uid: node for uid, node in self.manifest["nodes"].items() if node["resource_type"] == "model" and node["name"] in self.contracts}

    def asset_specs(self) -> list[dg.AssetSpec]:
        specs = []
        for uid, node in self.models.items():
            name, product = node["name"], self.products[node["name"]]
            deps = []
            for upstream in node["depends_on"]["nodes"]:
                key = self.key_of(upstream)
                if key is not None and key not in deps:
                    deps.append(key)
            code = hashlib.sha256((node.get("raw_code") or "").encode()).hexdigest()[:12]
            specs.append(dg.AssetSpec(
                key=dg.AssetKey([self.domain, name]),
                deps=deps,
                description=product.description,
                metadata={**product.metadata, "mesh/dbt_unique_id": uid},
                group_name=self.domain,
                owners=product.owners,
                tags=dict(product.tags),
                kinds=KINDS,
                code_version=f"{self.contracts[name].version}-{code}",
                freshness_policy=product.freshness_policy,
                automation_condition=product.automation_condition,
                skippable=True,
            ))
        return specs

    @cached_property
    def checks_by_test(self) -> dict[str, dg.AssetCheckKey]:
        """Each dbt test attached to a product model, as the key of its asset check (by test unique id).

        A generic test names its model (``attached_node``); a singular test that reads one model is
        that model's; a test over several models and no attached node is not a check."""
        found = {}
        for uid, node in self.manifest["nodes"].items():
            if node["resource_type"] != "test":
                continue
            upstream = set(node["depends_on"]["nodes"])
            attached = next(iter(upstream)) if len(upstream) == 1 else node.get("attached_node")
            if attached in self.models:
                found[uid] = dg.AssetCheckKey(dg.AssetKey([self.domain, self.models[attached]["name"]]), node["name"])
        return found

    def severity(self, test_id: str) -> str:
        return str(self.manifest["nodes"][test_id]["config"].get("severity") or "error").upper()

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        specs = []
        for uid, key in self.checks_by_test.items():
            node = self.manifest["nodes"][uid]
            others = {k for d in node["depends_on"]["nodes"] if (k := self.key_of(d)) is not None and k != key.asset_key}
            specs.append(dg.AssetCheckSpec(
                name=key.name, asset=key.asset_key, additional_deps=sorted(others, key=lambda k: k.to_user_string()),
                description=node.get("description") or f"dbt test {node['name']}", blocking=self.severity(uid) != "WARN",
                metadata={"mesh/dbt_unique_id": uid},
            ))
        return specs


__all__ = ["DbtSpecs", "KINDS"]
