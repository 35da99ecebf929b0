"""Domains that cannot trust each other: identity bound by the platform, private areas closed, refusals audited.

The hostile domain ``snoop`` (``tests/hostile/domains/snoop``) is planted in a copy of the project;
each of its assets tries one way around the access decision. Every attempt must be refused with a
clear message, recorded in the audit log under the identity the platform bound (not the one the
code claimed), while the other domains still load and materialize.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from conftest import LAUNCH_RUN, copy_env, run_mesh
from mesh_platform.governance.identity import IdentityError, bind

HOSTILE = Path(__file__).parent / "hostile" / "domains"

ATTEMPTS = {
    # snoop asset -> (asset it asked for, words the refusal must contain)
    "claims_dump": ("claims/landed_claims", "private asset of domain 'claims'"),
    "model_dump": ("fraud/fraud_model", "private asset of domain 'fraud'"),
    "relabelled": ("claims/landed_claims", "not this asset"),
    "impostor": ("policies/policyholders", "configured as domain 'policies' but this step runs as domain 'snoop'"),
    "holders_unmasked": ("policies/policyholders", "has no grant for consumer 'snoop'"),
}


def plant(project: Path, name: str) -> None:
    shutil.copytree(HOSTILE / name, project / "domains" / name)
    with open(project / "workspace.yaml", "a") as fh:
        fh.write(f"  - python_module:\n      module_name: domains.{name}.definitions\n      location_name: {name}\n")


@pytest.fixture
def snoop_project(domains_copy, sources, tmp_path):
    plant(domains_copy, "snoop")
    env = {
        **copy_env(domains_copy),
        "MESH_SOURCES": str(sources),
        "MESH_LAKE": str(tmp_path / "lake"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    return domains_copy, env


def test_hostile_reads_are_refused_audited_and_contained(snoop_project):
    project, env = snoop_project
    result = run_mesh(["materialize", "--in-process", "--select", "policies,claims,snoop"], env=env, cwd=project)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    # the other domains ran and published (claims' private landed rows are in the lake, unread by snoop)
    assert "policies: materializing" in out and "claims: materializing" in out
    assert (Path(env["MESH_LAKE"]) / "claims" / "_private" / "landed_claims" / "delta" / "_delta_log").is_dir()  # a partitioned private table
    assert (Path(env["MESH_LAKE"]) / "claims" / "claims" / "v1" / "_delta_log").is_dir()
    for asset, (_, words) in ATTEMPTS.items():
        assert words in out, f"{asset}: refusal not shown\n{out}"

    audit = run_mesh(["audit", "--json", "--consumer", "snoop"], env=env, cwd=project)
    assert audit.returncode == 0, audit.stderr
    denied = [r for r in json.loads(audit.stdout)["records"] if r["kind"] == "denied"]
    # one record per attempt, on the asset that was asked for, with the reason
    assert sorted(r["asset_key"] for r in denied) == sorted(target for target, _ in ATTEMPTS.values())
    for target, words in ATTEMPTS.values():
        assert any(r["asset_key"] == target and words in r["reason"] for r in denied), (target, denied)
    assert not [r for r in json.loads(audit.stdout)["records"] if r["kind"] == "read"]  # nothing was read


def test_a_domain_defining_another_domains_assets_does_not_load(domains_copy):
    (domains_copy / "domains" / "forger").mkdir()
    shutil.copy(HOSTILE / "snoop" / "__init__.py", domains_copy / "domains" / "forger" / "__init__.py")
    (domains_copy / "domains" / "forger" / "domain.yaml").write_text(
        "name: forger\nkind: consumer-aligned\ndescription: Writes as policies.\nteam: Forger\nowners: [team:forger]\n"
    )
    (domains_copy / "domains" / "forger" / "definitions.py").write_text(
        "import dagster as dg\nfrom mesh_platform import Domain\n\ndomain = Domain.load(__file__)\n\n"
        "@dg.asset(key=['policies', 'policies'])\ndef fake():\n    return None\n\n"
        "defs = dg.Definitions.merge(domain.definitions(), dg.Definitions(assets=[fake]))\n"
    )
    with open(domains_copy / "workspace.yaml", "a") as fh:
        fh.write("  - python_module:\n      module_name: domains.forger.definitions\n      location_name: forger\n")
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy)  # its own process: its own `domains`
    assert result.returncode == 1
    assert "defines assets of other domains: policies/policies" in result.stdout + result.stderr



@pytest.mark.parametrize(
    "deployed, location, computing, configured, expected",
    [
        (None, None, {"claims"}, None, "claims"),  # in-process: the domain of what the step computes
        (None, "claims", {"claims"}, None, "claims"),  # a run launched from a code location
        ("claims", "claims", {"claims"}, "claims", "claims"),  # production: deployment env agrees
        ("claims", None, {"claims"}, None, "claims"),
        ("claims", "fraud", {"claims"}, None, "deployment is domain 'claims'"),
        (None, "claims", {"claims", "policies"}, None, "computes assets of domain(s) policies"),
        (None, None, {"claims", "policies"}, None, "cannot tell which domain"),
        (None, None, set(), None, "cannot tell which domain"),
        (None, "claims", {"claims"}, "policies", "configured as domain 'policies'"),
    ],
)
def test_identity_binding(deployed, location, computing, configured, expected):
    if expected.isidentifier():
        assert bind(deployed, location, computing, configured) == expected
    else:
        with pytest.raises(IdentityError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            bind(deployed, location, computing, configured)


@pytest.mark.slow
def test_runs_launched_from_a_code_location_run_as_that_location(snoop_project, monkeypatch):
    """Through Dagster's own run launch (GraphQL, the location's origin): the bound identity is the location."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    project, env = snoop_project
    for key, value in env.items():
        if key != "DAGSTER_HOME":
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(project)  # code servers put their working folder first on the import path
    coordinator = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}  # launch at once, no daemon
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        only_snoop = project / "workspace_snoop.yaml"  # one code server is enough to show the binding
        only_snoop.write_text("load_from:\n  - python_module:\n      module_name: domains.snoop.definitions\n      location_name: snoop\n")
        target = WorkspaceFileTarget(paths=[str(only_snoop)])
        with WorkspaceProcessContext(instance=instance, workspace_load_target=target) as process:
            context = process.create_request_context()
            params = {
                "selector": {
                    "repositoryLocationName": "snoop",
                    "repositoryName": "__repository__",
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": ["snoop", "holders_unmasked"]}],
                },
                "mode": "default",
            }
            data = execute_dagster_graphql(context, LAUNCH_RUN, variables={"params": params}).data["launchRun"]
            assert data["__typename"] == "LaunchRunSuccess", data
            run_id = data["run"]["runId"]
            deadline = time.time() + 120
            while time.time() < deadline:  # bounded wait for the run worker
                run = instance.get_run_by_id(run_id)
                if run.is_finished:
                    break
                time.sleep(0.5)
            run = instance.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert run.remote_job_origin.repository_origin.code_location_origin.location_name == "snoop"
            observations = instance.fetch_observations(dg.AssetKey(["policies", "policyholders"]), limit=10).records
            denied = [o.asset_observation.metadata for o in observations if o.run_id == run_id]
            assert denied and denied[0]["mesh/audit"].value == "denied"
            assert denied[0]["mesh/consumer"].value == "snoop"
