"""Contract versions: diff classification, the git check, ODCS export, and serving previous majors."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT, copy_env, run_mesh
from mesh_platform.contracts import load_contract
from mesh_platform.contracts.diff import MAJOR, MINOR, PATCH, diff

CLAIMS = ROOT / "domains" / "claims" / "contracts" / "claims.yaml"


def edited(tmp_path: Path, edit, version: str | None = None, source: Path = CLAIMS, name: str = "new.yaml") -> Path:
    raw = yaml.safe_load(source.read_text())
    edit(raw)
    if version:
        raw["version"] = version
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def col(raw, name):
    return next(p for p in raw["schema"][0]["properties"] if p["name"] == name)


CASES = {
    "removed column": (lambda c: c["schema"][0]["properties"].remove(col(c, "claim_type")), MAJOR),
    "narrowed type": (lambda c: col(c, "amount_claimed").update(logicalType="integer"), MAJOR),
    "optional to required": (lambda c: col(c, "settled_at").update(required=True), MAJOR),
    "classification loosened": (lambda c: col(c, "amount_claimed").update(classification="public"), MAJOR),
    "allowed values removed": (lambda c: col(c, "status")["quality"][0]["arguments"].update(validValues=["open", "paid"]), MAJOR),
    "sla loosened": (lambda c: c["slaProperties"][0].update(value=2, unit="d"), MAJOR),
    "added optional column": (lambda c: c["schema"][0]["properties"].append({"name": "notes", "logicalType": "string", "classification": "internal"}), MINOR),
    "allowed values added": (lambda c: col(c, "status")["quality"][0]["arguments"].update(validValues=["open", "paid", "rejected", "withdrawn"]), MAJOR),
    "minimum raised": (lambda c: col(c, "amount_paid")["logicalTypeOptions"].update(minimum=10), MINOR),
    "minimum lowered": (lambda c: col(c, "amount_paid")["logicalTypeOptions"].update(minimum=-10), MAJOR),
    "pattern added": (lambda c: col(c, "claim_type").update(logicalTypeOptions={"pattern": "^[a-z_]+$"}), MINOR),
    "max length added": (lambda c: col(c, "claim_type").update(logicalTypeOptions={"maxLength": 20}), MINOR),
    "column rule added": (lambda c: col(c, "claim_type").update(quality=[{"metric": "nullValues", "mustBe": 0}]), MINOR),
    "allowed-values rule removed": (lambda c: col(c, "status").update(quality=[]), MAJOR),
    "description only": (lambda c: col(c, "status").update(description="Where the claim stands."), PATCH),
}


@pytest.mark.parametrize("case", list(CASES))
def test_changes_are_classified(case, tmp_path):
    edit, level = CASES[case]
    report = diff(load_contract(CLAIMS), load_contract(edited(tmp_path, edit)))
    assert report.required == level, report.changes


def test_cli_removed_read_column_under_minor_bump_fails(tmp_path):
    """analytics' dbt models read amount_paid: removing it under a minor bump breaks them (tests/test_contract_gate.py)."""
    remove = lambda c: c["schema"][0]["properties"].remove(col(c, "amount_paid"))  # noqa: E731
    new = edited(tmp_path, remove, version="1.1.0")
    result = run_mesh(["contract", "diff", str(CLAIMS), str(new), "--no-audit"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "major  schema[claims].properties[amount_paid]: required column removed" in result.stdout
    assert "FAIL: breaks analytics without a major bump" in result.stdout
    bumped = edited(tmp_path, remove, version="2.0.0", name="bumped.yaml")
    assert run_mesh(["contract", "diff", str(CLAIMS), str(bumped), "--no-audit"]).returncode == 0


def test_cli_added_optional_column_is_minor(tmp_path):
    new = edited(tmp_path, CASES["added optional column"][0], version="1.1.0")
    result = run_mesh(["contract", "diff", str(CLAIMS), str(new)])
    assert result.returncode == 0, result.stdout
    assert "minor  schema[claims].properties[notes]: optional column added" in result.stdout


def test_check_against_git_ref_without_a_mesh_degrades_and_says_why(tmp_path):
    """Contracts alone (no workspace to load): no reader is known, so a removal is possibly breaking."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "domains", repo / "domains", ignore=shutil.ignore_patterns("__pycache__"))
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "contracts")
    path = repo / "domains" / "claims" / "contracts" / "claims.yaml"
    raw = yaml.safe_load(path.read_text())
    CASES["removed column"][0](raw)
    raw["version"] = "1.1.0"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {"MESH_DOMAINS": str(repo / "domains"), "MESH_WORKSPACE": str(repo / "workspace.yaml"), "MESH_HOME": str(tmp_path / "home")}
    result = run_mesh(["contract", "check", "--against", "HEAD"], env=env, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "possibly breaking: no known reader reads claim_type; but the mesh could not be loaded" in result.stdout
    assert "1 contract file(s) changed since HEAD, 0 failing" in result.stdout
    assert run_mesh(["contract", "check", "--against", "HEAD", "--strict"], env=env, cwd=repo).returncode == 1
    path.unlink()  # deleting a contract is judged like any product-wide breaking change
    result = run_mesh(["contract", "check", "--against", "HEAD", "--strict"], env=env, cwd=repo)
    assert result.returncode == 1 and "file: contract deleted" in result.stdout, result.stdout


def test_export_is_valid_against_the_official_odcs_schema(tmp_path):
    result = run_mesh(["contract", "export", "--all", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    schema = json.loads(files("open_data_contract_standard").joinpath("schema.json").read_text())
    assert "v3.1.0" in schema["properties"]["apiVersion"]["enum"]
    validator = jsonschema.validators.validator_for(schema)(schema)
    exported = sorted(tmp_path.glob("*.odcs.yaml"))
    assert len(exported) == 13
    for path in exported:
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == "v3.1.0"
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, (path.name, errors)
        assert load_contract(path).id == document["id"]  # and it still reads back


def _bump_policies_to_v2(project: Path, deprecation: str) -> None:
    """policies 2.0.0 makes `sales_channel` optional (breaking); 1.x is kept until ``deprecation``."""
    contracts = project / "domains" / "policies" / "contracts"
    v1 = yaml.safe_load((contracts / "policies.yaml").read_text())
    v1["status"] = "deprecated"
    v1["customProperties"].append({"property": "deprecationDate", "value": deprecation})
    (contracts / "policies.v1.yaml").write_text(yaml.safe_dump(v1, sort_keys=False))
    v2 = yaml.safe_load((contracts / "policies.yaml").read_text())
    v2["version"] = "2.0.0"
    col(v2, "sales_channel")["required"] = False
    (contracts / "policies.yaml").write_text(yaml.safe_dump(v2, sort_keys=False))


@pytest.mark.slow
def test_major_bump_publishes_a_new_port_and_keeps_the_old_one(domains_copy, tmp_path):
    _bump_policies_to_v2(domains_copy, deprecation="2999-12-31")
    env = {**copy_env(domains_copy), "MESH_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster_home")}
    result = run_mesh(["materialize", "--in-process", "--scale", "0.1", "--select", "policies,claims"], env=env, cwd=domains_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "policies: materializing policies, policies_v1, policyholders" in result.stdout
    lake = tmp_path / "home" / "lake" / "policies" / "policies"
    from deltalake import DeltaTable

    v1, v2 = DeltaTable(str(lake / "v1")), DeltaTable(str(lake / "v2"))
    assert v1.history(1)[0]["mesh.contract.version"] == "1.0.0"  # each publish's commit names its contract version
    assert v2.history(1)[0]["mesh.contract.version"] == "2.0.0"
    assert not v1.schema().to_arrow().field("sales_channel").nullable

    # the next publish's page shows who still reads each major: claims read v1 (the kept port)
    again = run_mesh(["materialize", "--in-process", "--select", "policies"], env=env, cwd=domains_copy)
    assert again.returncode == 0, again.stdout + again.stderr
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster_home")) as instance:
        current = instance.get_latest_materialization_event(dg.AssetKey(["policies", "policies"])).asset_materialization.metadata
        kept = instance.get_latest_materialization_event(dg.AssetKey(["policies", "policies_v1"])).asset_materialization.metadata
    assert current["mesh/read_by_major"].value == {"days": 30, "majors": {"v1": ["claims"], "v2": []}}
    assert list(kept["mesh/read_by"].value["consumers"]) == ["claims"]  # on v1's own page: who must move
    assert "mesh/read_by_major" not in kept


def test_pin_to_a_retired_major_gets_a_clear_error(domains_copy):
    _bump_policies_to_v2(domains_copy, deprecation="2020-01-01")
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 1
    assert (
        "domains/claims/definitions.py: claims.inputs[policies]: pins major version 1 of 'policies.policies', "
        "but its contract is at version 2.0.0 and major 1 was retired on 2020-01-01; pin major 2"
    ) in result.stderr


def test_a_pin_to_a_deprecated_major_warns_with_its_date(domains_copy):
    _bump_policies_to_v2(domains_copy, deprecation="2999-12-31")
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    said = ("claims: claims.inputs[policies] pins major 1 of policies.policies, which is deprecated: "
            "served until 2999-12-31; move to major 2")
    assert out.count(said) == 1, out  # said once, not also by the load's log
    assert "analytics: dbt source policies.policies pins major 1 of policies.policies, which is deprecated" in out


def test_read_by_names_who_still_reads_a_major(tmp_path):
    """Each publish records who read that port (that major's asset) in the last 30 days, from the audit."""
    import dagster as dg

    from mesh_platform.governance.audit import read_by, read_metadata

    key = dg.AssetKey(["policies", "policies_v1"])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert read_by(instance, key)["mesh/read_by"].value == {"days": 30, "consumers": {}, "through": None}
        for consumer, version in (("claims", 3), ("analytics", 4), ("claims", 5)):
            instance.report_runless_asset_event(dg.AssetObservation(
                asset_key=key, metadata=read_metadata(consumer, "policies.policies", "v1", ["policy_id"], [], [], 10, None, version)))
        found = read_by(instance, key)["mesh/read_by"].value["consumers"]
    assert list(found) == ["analytics", "claims"]
    assert found["claims"]["version"] == 5 and found["claims"]["columns"] == ["policy_id"]


def test_read_by_reads_only_the_audit_records_after_the_latest_publish(tmp_path):
    """A publish works its readers out from the latest publish's list and the reads recorded since,
    not from every read of the last 30 days again; a reader whose last read left the window goes."""
    import datetime as dt

    import dagster as dg

    from mesh_platform.governance.audit import read_by, read_metadata

    key = dg.AssetKey(["policies", "policies"])

    def read(instance, consumer, version):
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=key, metadata=read_metadata(consumer, "policies.policies", "v1", ["policy_id"], [], [], 10, None, version)))

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for version in range(30):
            read(instance, "claims", version)
        read(instance, "analytics", 7)
        first = read_by(instance, key)["mesh/read_by"].value
        assert list(first["consumers"]) == ["analytics", "claims"] and isinstance(first["through"], int)
        stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)
        carried = {**first["consumers"], "fraud": {"last_read": stale.isoformat(timespec="seconds"), "version": 1, "columns": ["policy_id"]}}
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, metadata={"mesh/read_by": dg.MetadataValue.json({**first, "consumers": carried})}))
        read(instance, "claims", 31)

        fetched = []
        original = instance.fetch_observations

        def fetch(records_filter, limit, *args, **kwargs):
            found = original(records_filter, limit, *args, **kwargs)
            fetched.extend(found.records)
            return found

        instance.fetch_observations = fetch
        second = read_by(instance, key)["mesh/read_by"].value
    assert len(fetched) == 1  # the one read since the latest publish, not the 32 before it
    assert list(second["consumers"]) == ["analytics", "claims"]  # fraud's last read is 31 days old
    assert second["consumers"]["claims"]["version"] == 31 and second["consumers"]["analytics"]["version"] == 7
    assert second["through"] == fetched[0].storage_id > first["through"]
