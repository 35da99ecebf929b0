"""Every read-only mesh command works on a fresh clone, before any `mesh dev` or `mesh materialize`.

A fresh clone has no dbt manifest (``dbt/*/target`` is not committed), no sources, no lake and no
Dagster instance. The commands that load the domains prepare the dbt manifest themselves (on stderr,
so ``--json`` stays parseable) instead of leaving the dbt domain out.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, copy_env, run_mesh


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    target = tmp_path_factory.mktemp("fresh") / "project"
    shutil.copytree(ROOT / "domains", target / "domains", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "dbt", target / "dbt", ignore=shutil.ignore_patterns("target", "logs", "*.duckdb", ".user.yml"))
    for name in ("workspace.yaml", "quotas.yaml"):
        shutil.copy(ROOT / name, target / name)
    assert not list((target / "dbt").glob("*/target/manifest.json"))
    env = {**copy_env(target), "MESH_HOME": str(target / ".mesh")}
    return target, env


@pytest.mark.parametrize(
    "args, domains_of",
    [
        (["quotas", "--json"], lambda out: {d["domain"] for d in out["domains"]}),
        (["usage", "--json"], lambda out: {d["domain"] for d in out["domains"]}),
        (["catalog", "--json"], lambda out: {p["key"].split("/")[0] for p in out["products"]}),
        (["search", "--json", "loss ratio"], lambda out: {h["domain"] for h in out["hits"]}),
    ],
    ids=["quotas", "usage", "catalog", "search"],
)
def test_command_covers_every_domain_on_a_fresh_clone(fresh_clone, args, domains_of):
    target, env = fresh_clone
    result = run_mesh(args, env=env, cwd=target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not exist" not in result.stderr and "error:" not in result.stderr, result.stderr
    found = domains_of(json.loads(result.stdout))
    expected = {"analytics"} if args[0] == "search" else {"policies", "claims", "customer_care", "fraud", "analytics"}
    assert expected <= found, (found, result.stderr)
