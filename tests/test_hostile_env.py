"""Doors through shared process state, tried from inside hostile domains' modules.

``envy`` (``tests/hostile/domains/envy``) changes the process's environment at import, before the
platform looks at anything (identity, quota ceilings, masking key), and plants pickles where parsed
contracts were once cached under ``MESH_HOME``. ``sneak`` names assets with ``..`` and ``/`` to
reach other domains' private folders. Each attempt must change nothing: not for the hostile domain,
not for the domains loaded beside it in the same process.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT, copy_env, run_mesh
from test_isolation import plant


@pytest.fixture
def envy_project(domains_copy, sources, tmp_path):
    shutil.copy(ROOT / "quotas.yaml", domains_copy / "quotas.yaml")  # the mesh's ceilings
    plant(domains_copy, "envy")
    home = tmp_path / "home"
    env = {
        **copy_env(domains_copy),
        "MESH_HOME": str(home),
        "MESH_SOURCES": str(sources),
        "MESH_LAKE": str(tmp_path / "lake"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    return domains_copy, env, home


def _problems(result) -> list[dict]:
    return json.loads(result.stdout)["problems"]


def test_a_domain_cannot_raise_the_mesh_ceilings_or_plant_code_in_a_cache(envy_project):
    project, env, home = envy_project
    for attempt in (1, 2):  # the second process is the one a poisoned cache would have run in
        result = run_mesh(["validate", "--json"], env=env, cwd=project)
        assert result.returncode == 1, result.stdout + result.stderr
        problems = _problems(result)
        over = [p for p in problems if p["file"].endswith("envy/domain.yaml")]
        fields = {p["field"] for p in over}
        assert "quotas.concurrent_runs" in fields and "quotas.storage_bytes" in fields, problems  # the mesh's ceilings held
        assert all("envy" in p["file"] for p in problems), problems  # the other domains load as before
        assert (home / "envy-quotas.yaml").exists() and list((home / "cache" / "contracts").glob("*.pickle"))  # the attempt was made
        assert not (home / "envy-was-here").exists(), f"a planted pickle ran (attempt {attempt})"


@pytest.mark.slow
def test_a_domain_cannot_change_identity_or_the_masking_key_for_the_domains_beside_it(envy_project):
    """envy is loaded in the same process as policies and claims (``mesh materialize --in-process``)."""
    import deltalake

    project, env, home = envy_project
    result = run_mesh(["materialize", "--in-process", "--select", "policies,claims"], env=env, cwd=project)
    out = result.stdout + result.stderr
    # envy itself does not load (its quotas are over the ceilings), but its module ran first, in this process;
    # with MESH_DOMAIN=policies taken, every claims step would have been refused as "policies"
    assert "policies: ok" in out and "claims: ok" in out and "0 failed" in out, out
    audit = run_mesh(["audit", "--json"], env=env, cwd=project)
    records = json.loads(audit.stdout)["records"]
    claims_reads = [r for r in records if r["kind"] == "read" and r["asset_key"].startswith("policies/")]
    assert claims_reads and {r["consumer"] for r in claims_reads} == {"claims"}, claims_reads
    assert not [r for r in records if r["kind"] == "denied"], records
    # pseudonyms are keyed with the mesh's key, never with the one envy set and knows
    key = (home / "masking.key").read_text().strip().encode()
    holders = deltalake.DeltaTable(str(Path(env["MESH_LAKE"]) / "policies" / "policyholders" / "v1_masked")).to_pyarrow_table()
    full = deltalake.DeltaTable(str(Path(env["MESH_LAKE"]) / "policies" / "policyholders" / "v1")).to_pyarrow_table()
    email = full.column("email")[0].as_py()
    masked = holders.column("email")[0].as_py()

    def pseud(k: bytes) -> str:
        return "pseud:" + hmac.new(k, email.encode(), hashlib.sha256).hexdigest()[:32]

    assert masked == pseud(key) and masked != pseud(b"envy-knows-this-key")


def test_asset_keys_that_climb_out_of_a_domain_fail_its_load_naming_the_file(domains_copy):
    plant(domains_copy, "sneak")
    result = run_mesh(["validate", "--json"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 1
    problems = _problems(result)
    assert {p["file"] for p in problems} == {"domains/sneak/definitions.py"}, problems
    messages = " ".join(p["message"] for p in problems)
    assert "sneak/../../claims/_private/landed_claims" in messages and "sneak/../../claims/_private/dropped" in messages
    assert "is not a name" in messages


def _sneak_module(project: Path, monkeypatch):
    monkeypatch.setenv("MESH_DOMAINS", str(project / "domains"))
    spec = importlib.util.spec_from_file_location("sneak_definitions", project / "domains" / "sneak" / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sneak_definitions", module)
    spec.loader.exec_module(module)
    return module


def test_a_key_that_climbs_out_is_refused_at_run_time_and_audited(domains_copy, tmp_path, monkeypatch):
    """Past the loader (a code server loads a module as it is): the IO manager refuses both directions."""
    from mesh_platform.storage.io_manager import MeshIOManager

    plant(domains_copy, "sneak")
    lake = tmp_path / "lake"
    (lake / "claims" / "_private" / "landed_claims").mkdir(parents=True)
    (lake / "claims" / "_private" / "landed_claims" / "data.parquet").write_bytes(b"raw rows")
    sneak = _sneak_module(domains_copy, monkeypatch)
    with dg.instance_for_test() as instance:
        io = MeshIOManager(lake=str(lake))
        dropped = dg.materialize([sneak.dropper], resources={"io_manager": io}, instance=instance, raise_on_error=False)
        assert not dropped.success
        assert "is not a name" in str(dropped.get_step_failure_events()[0].event_specific_data.error)
        assert not (lake / "claims" / "_private" / "dropped").exists() and not list(lake.rglob("dropped*"))
        climbed = dg.materialize([sneak.climber, dg.AssetSpec(sneak.CLIMB)], selection=[sneak.climber.key],
                                 resources={"io_manager": io}, instance=instance, raise_on_error=False)
        assert not climbed.success
        observations = instance.fetch_observations(sneak.CLIMB, limit=10).records
        denied = [o.asset_observation.metadata for o in observations]
        assert denied and denied[0]["mesh/audit"].value == "denied" and denied[0]["mesh/consumer"].value == "sneak"
        assert "is not a name" in denied[0]["mesh/reason"].value


def test_mesh_validate_loads_each_domain_apart_so_one_cannot_change_what_the_others_find(domains_copy, tmp_path):
    """meddle, listed first, repoints the mesh's folders and replaces the platform's loader in its
    process. In one shared process every domain after it would fail (or pass whatever it holds);
    `mesh validate` loads each domain in its own process, so the others are judged on their own files."""
    shutil.copytree(ROOT / "tests" / "hostile" / "domains" / "meddle", domains_copy / "domains" / "meddle")
    text = (domains_copy / "workspace.yaml").read_text()
    first = "  - python_module:\n      module_name: domains.meddle.definitions\n      location_name: meddle\n"
    (domains_copy / "workspace.yaml").write_text(text.replace("load_from:\n", "load_from:\n" + first, 1))
    # a real problem in another domain, which meddle's loader would hide
    contract = domains_copy / "domains" / "claims" / "contracts" / "claims.yaml"
    contract.write_text(contract.read_text().replace("version: 1.0.0", "version: one", 1))
    env = {**copy_env(domains_copy), "MESH_HOME": str(tmp_path / "home"), "MESH_LAKE": str(tmp_path / "lake")}

    shared = subprocess.run([sys.executable, "-c", "from mesh_platform.mesh.validation import validate_mesh; r = validate_mesh(); print(r.domains)"],
                            cwd=domains_copy, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert shared.returncode == 0, shared.stderr
    assert int(shared.stdout.strip().splitlines()[-1]) < 6  # the door: in one process, meddle's changes reach the others

    result = run_mesh(["validate", "--json"], env=env, cwd=domains_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = _problems(result)
    assert any(p["file"].endswith("claims/contracts/claims.yaml") and p["field"] == "version" for p in problems), problems
    # the other domains found their own files: only claims' broken contract (and what reads it) fails
    assert not any("meddle" in p["message"] or "cannot find" in p["message"] for p in problems), problems
    assert {p["file"].split("/")[1] for p in problems if p["file"].startswith("domains/")} <= {"claims", "fraud", "analytics"}, problems
