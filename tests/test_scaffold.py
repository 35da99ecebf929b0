"""Self-serve: `mesh new domain` / `mesh new product`, grant requests pending until approved, `dg` on the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_env, run_mesh


def _snapshot(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def project(domains_copy):
    shutil.copy(ROOT / "dg.toml", domains_copy / "dg.toml")
    return domains_copy


def mesh(project: Path, *args: str):
    return run_mesh(list(args), env=copy_env(project), cwd=project)


@pytest.mark.parametrize(
    "args, message",
    [
        (["new", "domain", "Under-Writing", "--team", "UW", "--owner", "uw@x.example"], "is not an identifier"),
        (["new", "domain", "claims", "--team", "UW", "--owner", "uw@x.example"], "domain 'claims' already exists"),
        (["new", "product", "claims", "claims", "--input", "policies.policies"], "already has a product 'claims'"),
        (["new", "product", "claims", "class", "--input", "policies.policies"], "is not an identifier"),
        (["new", "product", "claims", "x", "--input", "policies.nope"], "no data product 'policies.nope'"),
        (["new", "product", "claims", "x", "--input", "policies.policies@7"], "major version 7 of 'policies.policies' is not served"),
        (["new", "product", "claims", "x", "--input", "billing.invoices"], "no producer domain 'billing'"),
        (["new", "product", "claims", "x", "--input", "policies.policies:policy_id,nope"], "has no column(s) nope"),
        (["new", "product", "nowhere", "x", "--input", "policies.policies"], "there is no domain 'nowhere'"),
    ],
)
def test_bad_input_is_a_clear_message_and_nothing_is_written(project, args, message):
    before = _snapshot(project)
    result = mesh(project, *args)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "nothing written" in result.stderr, result.stderr
    assert _snapshot(project) == before


def test_a_pending_grant_gives_no_access_and_says_who_must_approve(project):
    from mesh_platform.contracts.registry import ContractRegistry
    from mesh_platform.governance.access import AccessPending, authorize
    from mesh_platform.governance.grants import approve_grants, find_grant

    domains = project / "domains"
    with open(domains / "policies" / "grants.yaml", "a") as fh:
        fh.write("  - product: policies\n    consumer: analytics_two\n    purpose: Premiums for pricing.\n    status: pending  # a request\n")
    contract = ContractRegistry.discover(domains).get("policies.policies")
    with pytest.raises(AccessPending) as refused:
        authorize("analytics_two", contract, root=domains)
    assert "is pending" in str(refused.value) and "team:policy-administration" in str(refused.value)
    assert refused.value.approvers == ["team:policy-administration", "policy-data@acme-insurance.example"]
    assert approve_grants("policies", "analytics_two", root=domains) == [5]
    assert "# a request" in (domains / "policies" / "grants.yaml").read_text()  # comments kept
    assert not find_grant("policies", "policies", "analytics_two", domains).pending
    assert authorize("analytics_two", contract, root=domains).variant == "full"


@pytest.mark.slow
def test_fresh_clone_to_a_new_domains_product_materialized_in_four_commands(project, sources, tmp_path):
    """Scaffold a domain and a product, approve the request, materialize: four commands, all generated code passes.

    The run writes to a lake and an instance of its own: under xdist another file's tests on this
    worker count the session instance's runs, and a new domain's runs must not show up there.
    """
    shutil.copytree(ROOT / "tests", project / "tests", ignore=shutil.ignore_patterns("__pycache__", "snapshots", "fixtures", "hostile"))
    shutil.copytree(ROOT / "infra", project / "infra")
    commands = [
        ["new", "domain", "underwriting", "--team", "Underwriting Analytics", "--owner", "team:underwriting", "--owner", "uw@acme.example"],
        ["new", "product", "underwriting", "risk_inputs", "--input", "policies.policies@1:policy_id,product_line,sum_insured"],
        ["grants", "approve", "policies", "underwriting"],
        ["materialize", "--in-process", "--select", "*underwriting"],
    ]
    own = {"MESH_SOURCES": str(sources), "MESH_LAKE": str(tmp_path / "lake"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    outputs = []
    for i, args in enumerate(commands):
        result = run_mesh(args, env={**copy_env(project), **own}, cwd=project)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, "\n".join(outputs)
        if i == 1:  # before approval: validate passes and says what is pending and who approves
            check = mesh(project, "validate")
            assert check.returncode == 0, check.stdout + check.stderr
            assert "pending: domains/policies/grants.yaml" in check.stderr and "team:policy-administration" in check.stderr
    assert "done" in outputs[-1]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/domains"],
        cwd=project, env={**os.environ, **copy_env(project)}, capture_output=True, text=True, timeout=600,
    )
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr
    assert mesh(project, "validate").returncode == 0
    # the production configuration generated from the domains and grants is in step (as `mesh iam` writes it)
    out = project / "iam-check"
    assert mesh(project, "iam", "--lake", "s3://acme-mesh-lake/lake", "--out", str(out)).returncode == 0
    committed = project / "infra" / "iam"
    assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in committed.glob("*.json"))
    for path in out.glob("*.json"):
        assert path.read_text() == (committed / path.name).read_text(), path.name
    assert "policies/policies/v1/*" in (committed / "underwriting.json").read_text()


@pytest.mark.slow
def test_dg_checks_every_domains_definitions(project):
    """`dg check defs` from the project root loads every domain as its own code location (dg workspace)."""
    dg = Path(sys.executable).with_name("dg")
    if not dg.exists():
        pytest.skip("dagster-dg-cli is not installed in this environment")
    names = sorted(p.parent.name for p in (project / "domains").glob("*/dg.toml"))
    assert names == sorted(p.name for p in (project / "domains").iterdir() if (p / "domain.yaml").exists())
    result = subprocess.run(
        [str(dg), "check", "defs", "--use-active-venv"],
        cwd=project, env={**os.environ, **copy_env(project), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0 and "All definitions loaded successfully" in result.stdout, result.stdout + result.stderr
    listed = subprocess.run(
        [str(dg), "list", "defs", "--json"], cwd=project / "domains" / "claims", env={**os.environ, **copy_env(project)},
        capture_output=True, text=True, timeout=900,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert '"claims/claims"' in listed.stdout and '"claims/claim_events"' in listed.stdout, listed.stdout[:2000]
    # a broken domain fails the check, naming it
    (project / "domains" / "fraud" / "definitions.py").write_text("raise RuntimeError('broken on purpose')\n")
    broken = subprocess.run(
        [str(dg), "check", "defs", "--use-active-venv"],
        cwd=project, env={**os.environ, **copy_env(project), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True, text=True, timeout=900,
    )
    assert broken.returncode != 0 and "broken on purpose" in broken.stdout + broken.stderr


def test_product_pages_end_with_how_to_consume_them_python_and_dbt():
    """analytics has a Python product and dbt products: every product's page ends the same way."""
    from mesh_platform.mesh.workspace import LocationEntry, load_domain

    loaded = load_domain(LocationEntry("analytics", "domains.analytics.definitions"), ROOT)
    assert loaded.ok, loaded.problems
    graph = loaded.defs.resolve_asset_graph()
    for name in ("contact_topics", "loss_ratio"):
        text = graph.get(dg_key("analytics", name)).description
        assert "### How to consume it" in text, text
        assert f'InputPort("analytics.{name}", major=1' in text
        assert "grant in `domains/analytics/grants.yaml`" in text
        assert text.rstrip().endswith("LIMIT 100;  -- duckdb\n```") and f"$MESH_LAKE/analytics/{name}/v1/" in text


def dg_key(*path):
    import dagster as dg

    return dg.AssetKey(list(path))


def test_dg_workspace_lists_the_same_domains_as_workspace_yaml():
    """`mesh` reads workspace.yaml, `dg` (and `mesh dev`) dg.toml: one domain each, same names, one project per domain."""
    import tomllib

    from mesh_platform.mesh.workspace import read_workspace

    locations = {e.location for e in read_workspace(ROOT / "workspace.yaml")}
    projects = tomllib.loads((ROOT / "dg.toml").read_text())["workspace"]["projects"]
    assert {Path(p["path"]).name for p in projects} == locations
    for p in projects:
        config = tomllib.loads((ROOT / p["path"] / "dg.toml").read_text())
        assert config["directory_type"] == "project"
        assert config["project"]["code_location_name"] == Path(p["path"]).name
        assert (ROOT / p["path"] / f"{config['project']['code_location_target_module']}.py").exists()
