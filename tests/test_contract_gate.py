"""The consumer-aware contract gate: `mesh contract check --against REF` judges each change by who reads it.

On a git copy of the project: removing a column analytics' dbt models read breaks analytics (its
owners named) and fails without a major bump; removing a column nothing reads is "possibly
breaking", never compatible; adding an optional column is compatible; the audit log names a reader
no port declares; a manifest or audit that cannot be read degrades the verdict and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import dagster as dg
import pytest
import yaml

from conftest import ROOT, copy_env, run_mesh

OWNERS = "owners team:insurance-analytics, analytics@acme-insurance.example"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository holding a copy of the project, committed: the base every test changes."""
    root = tmp_path_factory.mktemp("gate") / "project"
    shutil.copytree(ROOT / "domains", root / "domains", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "dbt", root / "dbt", ignore=shutil.ignore_patterns("logs", "target", "*.duckdb", ".user.yml"))
    shutil.copy(ROOT / "workspace.yaml", root / "workspace.yaml")
    (root / ".gitignore").write_text("target/\nlogs/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    return root


@pytest.fixture
def claims(repo):
    """Edit claims.claims in the copy; the copy is restored afterwards."""
    path = repo / "domains" / "claims" / "contracts" / "claims.yaml"
    original = path.read_text()

    def edit(remove=(), add=(), version="1.1.0", change=None):
        raw = yaml.safe_load(original)
        props = raw["schema"][0]["properties"]
        raw["schema"][0]["properties"] = [p for p in props if p["name"] not in remove] + list(add)
        raw["version"] = version
        if change is not None:
            change({p["name"]: p for p in raw["schema"][0]["properties"]})
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    yield edit
    path.write_text(original)
    _git(repo, "checkout", "--", ".")


def check(repo: Path, tmp_path: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**copy_env(repo), "MESH_HOME": str(home or tmp_path / "home")}
    return run_mesh(["contract", "check", "--against", "HEAD", *args], env=env, cwd=repo)


def test_removing_a_read_column_breaks_its_consumers_by_name(repo, claims, tmp_path):
    claims(remove=["amount_paid", "claim_type"], add=[{"name": "notes", "logicalType": "string", "classification": "internal"}])
    result = check(repo, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "domains/claims/contracts/claims.yaml: FAIL" in out
    removed = out.split("properties[amount_paid]: required column removed\n", 1)[1]
    assert removed.startswith("        breaking for analytics: 1 consumer(s) reads amount_paid\n")
    assert f"analytics.loss_ratio via dbt model source claims.claims (major 1); {OWNERS}" in removed
    assert f"analytics.claims_weekly via dbt model source claims.claims (major 1); {OWNERS}" in removed
    unread = out.split("properties[claim_type]: required column removed\n", 1)[1].splitlines()[0]
    assert unread.strip().startswith("possibly breaking: no known reader reads claim_type")
    assert "properties[notes]: optional column added\n    minor" not in out  # compatible: no verdict line
    assert "FAIL: breaks analytics without a major bump (1.0.0 -> 1.1.0 is a minor bump)" in out

    report = json.loads(check(repo, tmp_path, "--format", "json").stdout)
    changes = {c["column"]: c for c in report["contracts"][0]["changes"]}
    assert changes["amount_paid"]["verdict"] == "breaking"
    assert {(r["consumer"], r["asset"], r["via"]) for r in changes["amount_paid"]["consumers"]} == {
        ("analytics", "loss_ratio", "dbt model"), ("analytics", "claims_weekly", "dbt model")}
    assert changes["claim_type"]["verdict"] == "possibly breaking"
    assert changes["notes"]["verdict"] == "compatible"

    junit = ElementTree.fromstring(check(repo, tmp_path, "--format", "junit").stdout.split("?>", 1)[1])
    assert (junit.get("tests"), junit.get("failures")) == ("3", "1")
    failed = [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None]
    assert failed == ["schema[claims].properties[amount_paid]: required column removed"]


def test_an_unread_removal_is_possibly_breaking_and_passes_unless_strict(repo, claims, tmp_path):
    claims(remove=["claim_type"])
    result = check(repo, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "possibly breaking: no known reader reads claim_type" in result.stdout
    assert "the audit log was not consulted: no Dagster instance" in result.stdout  # the gap, said
    assert "ok, but: 1 possibly breaking change(s) with no known reader (1.0.0 -> 1.1.0)" in result.stdout
    assert check(repo, tmp_path, "--strict").returncode == 1


def test_an_optional_column_added_is_compatible(repo, claims, tmp_path):
    claims(add=[{"name": "notes", "logicalType": "string", "classification": "internal"}])
    result = check(repo, tmp_path)
    assert result.returncode == 0, result.stdout
    assert "ok: compatible (1.0.0 -> 1.1.0, minor)" in result.stdout


def test_new_constraints_on_read_columns_break_their_readers(repo, claims, tmp_path):
    """A tighter bound on a column analytics reads would refuse data claims published so far (its
    zero amounts): breaking for analytics. The same kind of rule on a column nobody reads is
    compatible; new allowed values are breaking whoever reads them (a value they do not handle)."""
    def tighten(columns):
        columns["amount_paid"]["logicalTypeOptions"]["minimum"] = 10
        columns["claim_type"].setdefault("logicalTypeOptions", {})["pattern"] = "^[a-z_]+$"

    claims(change=tighten)
    result = check(repo, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    raised = result.stdout.split("amount_paid].logicalTypeOptions.minimum: minimum changed from 0 to 10\n", 1)[1]
    assert raised.startswith("        breaking for analytics: 1 consumer(s) read amount_paid, and the new constraint may refuse data")
    assert f"analytics.loss_ratio via dbt model source claims.claims (major 1); {OWNERS}" in raised
    report = json.loads(check(repo, tmp_path, "--format", "json").stdout)["contracts"][0]
    verdicts = {c["column"]: c["verdict"] for c in report["changes"]}
    assert verdicts == {"amount_paid": "breaking", "claim_type": "compatible"}
    assert report["required_bump"] == "major"
    assert check(repo, tmp_path, "--format", "json").returncode == 1

    claims(change=tighten, version="2.0.0")  # with a major bump it passes, naming who must move
    assert check(repo, tmp_path).returncode == 0

    claims(change=lambda columns: columns["status"]["quality"][0]["arguments"]["validValues"].append("withdrawn"))
    result = check(repo, tmp_path)
    assert result.returncode == 1, result.stdout
    assert "allowed values added: withdrawn; consumers may meet values they do not handle\n        breaking for analytics" in result.stdout


def test_junit_fails_a_contract_file_that_cannot_be_judged(repo, claims, tmp_path):
    """CI reads the JUnit report: a command that exits 1 never reports no failure."""
    path = repo / "domains" / "claims" / "contracts" / "claims.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: [1.0.0", 1))
    result = check(repo, tmp_path, "--format", "junit")
    assert result.returncode == 1, result.stdout + result.stderr
    junit = ElementTree.fromstring(result.stdout.split("?>", 1)[1])
    assert junit.get("failures") == "1"
    failed = next(c for c in junit.iter("testcase") if c.find("failure") is not None)
    assert (failed.get("classname"), failed.get("name")) == ("domains/claims/contracts/claims.yaml", "contract file")

    claims(version="0.9.0")  # only the version, and it went down
    result = check(repo, tmp_path, "--format", "junit")
    assert result.returncode == 1, result.stdout + result.stderr
    junit = ElementTree.fromstring(result.stdout.split("?>", 1)[1])
    assert junit.get("failures") == "1"
    assert "version went down from 1.0.0 to 0.9.0" in next(c for c in junit.iter("failure")).get("message")


def test_a_major_bump_passes_and_names_the_consumers_that_must_move(repo, claims, tmp_path):
    claims(remove=["amount_paid"], version="2.0.0")
    result = check(repo, tmp_path)
    assert result.returncode == 0, result.stdout
    assert "ok: major bump 1.0.0 -> 2.0.0; consumers that must move to major 2: analytics, fraud" in result.stdout
    assert "must move: fraud.claim_features via input port claims (major 1)" in result.stdout


def _instance_with_a_read(home: Path, consumer: str, columns: list[str], read_for: str | None = None) -> None:
    from mesh_platform.governance.audit import read_metadata

    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text("")
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=dg.AssetKey(["claims", "claims"]),
            metadata=read_metadata(consumer, "claims.claims", "v1", columns, [], [], 40, "a notebook", 7, read_for=read_for),
        ))


def test_a_declared_reader_carries_its_last_read_from_the_audit(repo, claims, tmp_path):
    """fraud's claim_features read claims (its input port `claims`, at version 7): the gate names that
    port once, with its last read and the version it read, not a second reader from the audit."""
    home = tmp_path / "home"
    _instance_with_a_read(home, "fraud", ["claim_id", "amount_claimed"], read_for="claim_features.claims")
    claims(remove=["amount_claimed"])
    result = check(repo, tmp_path, home=home)
    assert result.returncode == 1, result.stdout + result.stderr
    named = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("fraud")]
    assert len(named) == 1, result.stdout
    assert named[0].startswith("fraud.claim_features via input port claims (major 1); last read ")
    assert " at version 7; owners " in named[0]
    reader = json.loads(check(repo, tmp_path, "--format", "json", home=home).stdout)["contracts"][0]["changes"][0]["consumers"][0]
    assert (reader["consumer"], reader["asset"], reader["port"], reader["via"], reader["version_read"]) == ("fraud", "claim_features", "claims", "input port", 7)
    assert reader["last_read"]


def test_the_audit_names_a_reader_no_port_declares(repo, claims, tmp_path):
    """customer_care's ports never ask for claim_type, but the audit log shows it read it."""
    home = tmp_path / "home"
    _instance_with_a_read(home, "customer_care", ["claim_id", "claim_type"])
    claims(remove=["claim_type"])
    result = check(repo, tmp_path, home=home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "breaking for customer_care: 1 consumer(s) reads claim_type" in result.stdout
    assert "customer_care via audit v1 (major 1); last read " in result.stdout
    assert " at version 7; owners " in result.stdout
    # outside the window the read no longer counts
    assert check(repo, tmp_path, "--window-days", "0", home=home).returncode == 0


def test_an_unreadable_audit_or_manifest_degrades_to_possibly_breaking(repo, claims, tmp_path):
    home = tmp_path / "home"
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_url: postgresql://nobody@127.0.0.1:1/none\n")
    claims(remove=["claim_type"])
    result = check(repo, tmp_path, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "possibly breaking: no known reader reads claim_type; but the audit log could not be read" in result.stdout

    sources = repo / "dbt" / "analytics" / "models" / "sources.yml"
    sources.write_text(sources.read_text().replace("product: claims.claims,", "product: claims.nope,", 1))
    claims(remove=["amount_paid"])
    result = check(repo, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # analytics' reads are unknown: not named
    line = result.stdout.split("properties[amount_paid]: required column removed\n", 1)[1].splitlines()[0]
    assert "possibly breaking: no known reader reads amount_paid; but domain analytics did not load" in line
    assert "compatible" not in line


def test_contract_diff_judges_against_the_readers_too(repo, tmp_path):
    old = repo / "domains" / "claims" / "contracts" / "claims.yaml"
    raw = yaml.safe_load(old.read_text())
    raw["schema"][0]["properties"] = [p for p in raw["schema"][0]["properties"] if p["name"] != "amount_claimed"]
    raw["version"] = "1.1.0"
    new = tmp_path / "claims.yaml"
    new.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**copy_env(repo), "MESH_HOME": str(tmp_path / "home")}
    result = run_mesh(["contract", "diff", str(old), str(new), "--no-audit"], env=env, cwd=repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "breaking for fraud: 1 consumer(s) reads amount_claimed" in result.stdout
    assert "fraud.claim_features via input port claims (major 1)" in result.stdout
