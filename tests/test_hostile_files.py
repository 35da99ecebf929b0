"""Hostile input files: refused with a message naming the file, quickly, and only where they are.

The corpus is kept in ``tests/hostile/``: a contract that is not UTF-8, alias bombs ("billion
laughs") as a contract, a grants file and a domain descriptor, a directory named like a contract,
a grants file with one malformed date among valid grants, and a grants file with dangling grants.
Each is planted in a copy of the project; the faulty file must be named (with its field), the
refusal must be fast and small, and every domain the fault does not concern must still load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from conftest import copy_env, run_mesh

HOSTILE = Path(__file__).parent / "hostile"
DOMAINS = ["policies", "claims", "customer_care", "fraud", "analytics"]


# -- the readers, in this process: refusal, message, time and memory ---------------------------


def refusal(call) -> tuple[list, float, int]:
    """Run ``call``, which must raise ContractError: its problems, seconds and peak traced bytes."""
    from mesh_platform.foundations.problems import ContractError

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ContractError) as exc:
            call()
    finally:
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return exc.value.problems, seconds, peak


@pytest.mark.parametrize("reader", ["contract", "yaml"])
def test_alias_bomb_contract_is_refused_fast_and_small(reader):
    from mesh_platform.contracts.loader import load_contract, load_yaml

    path = HOSTILE / "billion_laughs_contract.yaml"
    problems, seconds, peak = refusal(lambda: (load_contract if reader == "contract" else load_yaml)(path))
    assert len(problems) == 1 and problems[0].file.endswith("tests/hostile/billion_laughs_contract.yaml")
    assert "aliases expand the document to 2,345,679,067 nodes from 76 written" in problems[0].message
    assert "alias bomb" in problems[0].message
    assert seconds < 0.5
    assert peak < 5_000_000  # bytes: the 10^9 strings are never built


def test_alias_bomb_grants_file_grants_nothing_and_says_why(tmp_path):
    from mesh_platform.governance.grants import find_grant, read_grants

    shutil.copy(HOSTILE / "billion_laughs_grants.yaml", tmp_path / "grants.yaml")
    started = time.perf_counter()
    grants = read_grants(tmp_path)
    assert time.perf_counter() - started < 0.5
    assert not grants.readable and grants.grants == []
    assert [p.field for p in grants.problems] == [""]
    assert grants.problems[0].file.endswith("grants.yaml") and "alias bomb" in grants.problems[0].message
    assert grants.refusals_for("analytics") == list(grants.problems)
    assert find_grant(tmp_path.name, "fraud_scores", "analytics", root=tmp_path.parent) is None  # fail closed


def test_alias_bomb_domain_descriptor_is_refused(tmp_path):
    from mesh_platform.products.domain import load_descriptor

    (tmp_path / "customer_care").mkdir()
    path = tmp_path / "customer_care" / "domain.yaml"
    shutil.copy(HOSTILE / "billion_laughs_domain.yaml", path)
    problems, seconds, peak = refusal(lambda: load_descriptor(path))
    assert problems[0].file.endswith("customer_care/domain.yaml") and "alias bomb" in problems[0].message
    assert seconds < 0.5 and peak < 5_000_000


def test_contract_that_is_not_utf8_names_the_byte():
    from mesh_platform.contracts.loader import load_contract

    problems, _, _ = refusal(lambda: load_contract(HOSTILE / "not_utf8_contract.yaml"))
    assert len(problems) == 1
    assert problems[0].file.endswith("tests/hostile/not_utf8_contract.yaml")
    assert problems[0].field == "line 12, byte 340"
    assert problems[0].message.startswith("not UTF-8 text: byte 0xfc at byte offset 340")
    assert (HOSTILE / "not_utf8_contract.yaml").read_bytes()[340] == 0xFC  # the ü of a Latin-1 editor


def test_a_directory_where_a_file_is_expected(tmp_path):
    from mesh_platform.contracts.loader import load_contract, load_yaml
    from mesh_platform.governance.grants import read_grants

    problems, _, _ = refusal(lambda: load_contract(HOSTILE / "directory_contract.yaml"))
    assert problems[0].file.endswith("directory_contract.yaml")
    assert problems[0].message == "is a directory, not a contract file"
    (tmp_path / "grants.yaml").mkdir()
    assert read_grants(tmp_path).problems[0].message == "is a directory, not a grants file"
    problems, _, _ = refusal(lambda: load_yaml(tmp_path / "grants.yaml"))
    assert problems[0].message == "is a directory, not a file"


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    from mesh_platform.contracts.loader import load_contract

    fifo = tmp_path / "claims.yaml"
    os.mkfifo(fifo)
    problems, seconds, _ = refusal(lambda: load_contract(fifo))
    assert "is not a regular file" in problems[0].message and seconds < 0.5


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    from mesh_platform.foundations import safe_yaml
    from mesh_platform.contracts.loader import load_contract

    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(safe_yaml.MAX_BYTES + 1)  # sparse: large, but costs no disk
    problems, seconds, peak = refusal(lambda: load_contract(path))
    assert f"is {safe_yaml.MAX_BYTES + 1:,} bytes; a contract file may be at most {safe_yaml.MAX_BYTES:,} bytes" in problems[0].message
    assert seconds < 0.5 and peak < 1_000_000


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("a: &a [x, *a]\n", "line 1, column 4", "an alias refers to the node it is anchored on"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1", "not valid YAML: but found another document"),
        ("a: !!int abc\n", "", "not valid YAML: ValueError: invalid literal for int()"),
        ("a: " + "9" * 5000 + "\n", "", "not valid YAML: ValueError: Exceeds the limit"),
        ("- " * 5000 + "x\n", "line 1, column", "not valid YAML: exceeded maximum nesting depth"),
    ],
)
def test_other_hostile_yaml_names_file_and_place(tmp_path, text, field, message):
    from mesh_platform.contracts.loader import load_yaml

    path = tmp_path / "odd.yaml"
    path.write_text(text)
    problems, seconds, _ = refusal(lambda: load_yaml(path))
    assert problems[0].file.endswith("odd.yaml")
    assert problems[0].field.startswith(field)
    assert message in problems[0].message
    assert seconds < 0.5


def test_anchors_within_bounds_still_load(tmp_path):
    from mesh_platform.contracts.loader import load_yaml

    path = tmp_path / "ok.yaml"
    path.write_text("base: &base {owner: R&D, rows: [1, 2]}\nfirst: {<<: *base, name: a}\nsecond: *base\n")
    assert load_yaml(path) == {
        "base": {"owner": "R&D", "rows": [1, 2]},
        "first": {"owner": "R&D", "rows": [1, 2], "name": "a"},
        "second": {"owner": "R&D", "rows": [1, 2]},
    }


def test_a_malformed_grant_is_dropped_alone(tmp_path):
    from mesh_platform.governance.grants import find_grant, read_grants

    producer = tmp_path / "policies"
    producer.mkdir()
    shutil.copy(HOSTILE / "malformed_date_grants.yaml", producer / "grants.yaml")
    grants = read_grants(producer)
    assert grants.readable
    assert [i for i, _ in grants.entries] == [0, 2, 3, 4]
    assert [(p.field, p.message) for p in grants.problems] == [
        ("grants[1].expires", "expires must be an ISO date (YYYY-MM-DD), got '2027-02-30'")
    ]
    assert grants.problems[0].file.endswith("policies/grants.yaml")
    assert find_grant("policies", "policies", "claims", root=tmp_path).consumer == "claims"
    assert find_grant("policies", "policies", "customer_care", root=tmp_path) is None  # fail closed
    assert find_grant("policies", "policyholders", "customer_care", root=tmp_path).unmasked == ["pii"]
    assert grants.refusals_for("customer_care") == list(grants.problems)
    assert grants.refusals_for("claims") == []


# -- the mesh, in a copy of the project: the fault stays where it is ----------------------------

LOAD = """
import json, time
started = time.perf_counter()
from mesh_platform.mesh.workspace import Mesh
from mesh_platform.mesh.validation import validate_mesh
mesh = Mesh.load()
domains = {d.entry.location: [str(p) for p in d.problems] for d in mesh.domains}
loaded = [d.entry.location for d in mesh.domains if d.ok]
report = validate_mesh()
validation = [str(p) for p in report.problems]
print(json.dumps({"domains": domains, "loaded": loaded, "validation": validation, "warnings": report.warnings, "seconds": time.perf_counter() - started}))
"""


def load_mesh(project: Path, lake: Path | str | None = None) -> dict:
    """``Mesh.load`` and ``validate_mesh`` of the copy, in a fresh process (as a code server would);
    its lake is an empty one of its own unless ``lake`` is given."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD], cwd=project, env={**os.environ, **copy_env(project), "MESH_LAKE": str(lake or project / "lake")},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def plant(project: Path, fixture: str, target: str) -> None:
    source, destination = HOSTILE / fixture, project / "domains" / target
    if destination.is_dir():
        shutil.rmtree(destination)
    elif destination.exists():
        destination.unlink()
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy(source, destination)


CASES = {
    "not UTF-8 contract": (
        "not_utf8_contract.yaml", "fraud/contracts/fraud_scores.yaml",
        {
            "fraud": "domains/fraud/contracts/fraud_scores.yaml: line 12, byte 340: not UTF-8 text: byte 0xfc at byte offset 340",
            # nothing of fraud_scores published in this lake: nothing to load against instead
            "analytics": "(domains/fraud/contracts/fraud_scores.yaml) cannot be read; fix it first (and nothing of it is published",
        },
        "domains/fraud/contracts/fraud_scores.yaml: line 12, byte 340: not UTF-8 text",
    ),
    "alias bomb contract": (
        "billion_laughs_contract.yaml", "customer_care/contracts/laughs.yaml",
        {"customer_care": "domains/customer_care/contracts/laughs.yaml: aliases expand the document to 2,345,679,067 nodes"},
        "domains/customer_care/contracts/laughs.yaml: aliases expand the document",
    ),
    "directory named like a contract": (
        "directory_contract.yaml", "claims/contracts/claim_notes.yaml",
        {"claims": "domains/claims/contracts/claim_notes.yaml: is a directory, not a contract file"},
        "domains/claims/contracts/claim_notes.yaml: is a directory, not a contract file",
    ),
    "alias bomb grants file": (
        "billion_laughs_grants.yaml", "fraud/grants.yaml",
        # the producer loads; its only consumer loses the grant, and is told why
        {"analytics": "domains/fraud/grants.yaml cannot be read, so it grants nothing: aliases expand the document"},
        "domains/fraud/grants.yaml: aliases expand the document",
    ),
    "alias bomb domain descriptor": (
        "billion_laughs_domain.yaml", "customer_care/domain.yaml",
        # policies still loads although it grants customer_care unmasked pii (whose clearance is unreadable)
        {"customer_care": "domains/customer_care/domain.yaml: aliases expand the document"},
        "domains/customer_care/domain.yaml: aliases expand the document",
    ),
    "one malformed grant": (
        "malformed_date_grants.yaml", "policies/grants.yaml",
        {"customer_care": (
            "domains/customer_care/definitions.py: conversations.inputs[policies]: [input_ports_granted] domain 'customer_care' "
            "may not read 'policies.policies': it is internal and domains/policies/grants.yaml has no grant for consumer "
            "'customer_care' on product 'policies' (malformed grants in domains/policies/grants.yaml are not in effect: "
            "grants[1].expires: expires must be an ISO date (YYYY-MM-DD), got '2027-02-30')"
        )},
        "domains/policies/grants.yaml: grants[1].expires: expires must be an ISO date (YYYY-MM-DD), got '2027-02-30'",
    ),
    "dangling grants": (
        "dangling_grants.yaml", "fraud/grants.yaml",
        {},  # every domain loads; validation reports them
        "domains/fraud/grants.yaml: grants[1].consumer: 'marketing' is not a domain of the mesh",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_file_fails_only_what_reads_it(domains_copy, case):
    fixture, target, failing, reported = CASES[case]
    plant(domains_copy, fixture, target)
    report = load_mesh(domains_copy)
    for domain, expected in failing.items():
        assert any(expected in p for p in report["domains"][domain]), report["domains"][domain]
    assert report["loaded"] == [d for d in DOMAINS if d not in failing], report["domains"]
    assert any(reported in p for p in report["validation"]), report["validation"]
    assert not any("Traceback" in p or "policy raised" in p for ps in report["domains"].values() for p in ps)


def test_consumers_load_against_what_a_broken_producer_last_published(domains_copy, materialized_mesh, settings):
    """A damaged contract file fails its own domain's load, naming the file; its consumer loads against
    the contract the producer last published (kept with each Delta commit) and says so."""
    plant(domains_copy, "not_utf8_contract.yaml", "fraud/contracts/fraud_scores.yaml")
    report = load_mesh(domains_copy, lake=settings.lake)
    assert any("domains/fraud/contracts/fraud_scores.yaml: line 12, byte 340: not UTF-8 text" in p for p in report["domains"]["fraud"])
    assert report["loaded"] == [d for d in DOMAINS if d != "fraud"], report["domains"]
    assert any(w.startswith("analytics: input port fraud.fraud_scores: domains/fraud/contracts/fraud_scores.yaml cannot be read: "
                            "loaded against the contract fraud last published (fraud.fraud_scores 1.") for w in report["warnings"]), report["warnings"]

    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.storage.lake import Lake
    from mesh_platform.storage.publishing import LastPublished, last_published_contract

    contract, version, variant = last_published_contract(Lake(settings.lake), "fraud", "fraud_scores")
    assert contract.id == "fraud.fraud_scores" and version >= 0 and variant == "full"
    assert contract.column_names == mesh_registry().get("fraud.fraud_scores").column_names
    broken = LastPublished(mesh_registry(domains_copy / "domains"), Lake(settings.lake))
    assert broken.get("fraud.fraud_scores").column_names == contract.column_names and "fraud.fraud_scores" in broken.used


def test_dangling_grants_name_field(domains_copy):
    plant(domains_copy, "dangling_grants.yaml", "fraud/grants.yaml")
    result = run_mesh(["policies"], env=copy_env(domains_copy), cwd=domains_copy)
    assert result.returncode == 1
    assert "FAIL  grants of fraud: grants_valid" in result.stdout
    assert "domains/fraud/grants.yaml: grants[1].consumer: 'marketing' is not a domain of the mesh (domains: analytics, claims, customer_care, fraud, policies)" in result.stdout
    assert "domains/fraud/grants.yaml: grants[2].product: 'fraud' has no product 'fraud_score' (products: claim_features, fraud_scores; or \"*\" for all of them)" in result.stdout
    assert "pass  grants of policies: grants_valid (global)" in result.stdout


def test_commands_refuse_an_alias_bomb_cleanly(domains_copy):
    plant(domains_copy, "billion_laughs_contract.yaml", "customer_care/contracts/laughs.yaml")
    message = "domains/customer_care/contracts/laughs.yaml: aliases expand the document to 2,345,679,067 nodes"
    for command, code in (["validate"], 1), (["policies"], 1), (["catalog"], 0):
        started = time.perf_counter()
        result = run_mesh(command, env=copy_env(domains_copy), cwd=domains_copy, timeout=180)
        assert time.perf_counter() - started < 120, command
        assert result.returncode == code, (command, result.stdout, result.stderr)
        assert message in result.stdout + result.stderr, command
        assert "Traceback" not in result.stderr, command
    assert "policies/policies  v1.0.0" in result.stdout  # the catalog still lists the other domains' products


def test_workspace_file_that_is_an_alias_bomb(domains_copy):
    shutil.copy(HOSTILE / "billion_laughs_grants.yaml", domains_copy / "workspace.yaml")
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy, timeout=180)
    assert result.returncode == 1
    assert "Error: workspace.yaml: aliases expand the document" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_grant_validates_reports_and_others_still_materialize(domains_copy, tmp_path):
    """One consumer's grant is malformed: it alone loses access; claims still reads policies and publishes."""
    plant(domains_copy, "malformed_date_grants.yaml", "policies/grants.yaml")
    env = copy_env(domains_copy)
    result = run_mesh(["validate"], env=env, cwd=domains_copy)
    assert result.returncode == 1
    assert "error: domains/policies/grants.yaml: grants[1].expires: expires must be an ISO date (YYYY-MM-DD), got '2027-02-30'" in result.stderr
    assert "4 domain(s) loaded" in result.stdout  # customer_care lost its access to policies.policies

    result = run_mesh(["policies"], env=env, cwd=domains_copy)
    assert result.returncode == 1
    assert "FAIL  grants of policies: grants_valid" in result.stdout
    assert "FAIL  domain customer_care did not load" in result.stdout
    assert "pass  claims.claims: input_ports_granted (global)" in result.stdout

    home = tmp_path / "home"  # a mesh home of its own: this run must not add to the session's instance
    env = {**env, "MESH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    result = run_mesh(["materialize", "--in-process", "--select", "policies,claims", "--scale", "0.05"], env=env, cwd=domains_copy)
    assert "grants[1].expires" in result.stderr  # reported, and the run goes on without customer_care
    assert result.returncode == 1  # the mesh has a problem ...
    assert "claims: materializing" in result.stdout and "FAILED in" not in result.stdout, result.stdout
    assert "0 failed, 0 asset(s) skipped" in result.stdout  # ... but policies and claims published
    assert (home / "lake" / "claims" / "claims" / "v1" / "_delta_log").is_dir()


def test_alias_bomb_in_a_dbt_project_is_refused_before_dbt_parses_it(domains_copy):
    shutil.copy(HOSTILE / "billion_laughs_grants.yaml", domains_copy / "dbt/analytics/models/sources.yml")
    started = time.perf_counter()
    result = run_mesh(["validate"], env=copy_env(domains_copy), cwd=domains_copy, timeout=180)
    assert time.perf_counter() - started < 120
    assert result.returncode == 1
    assert "error: dbt/analytics/models/sources.yml: aliases expand the document" in result.stderr
    assert "run `mesh dbt prepare`" in result.stderr  # analytics cannot load without its manifest ...
    assert "4 domain(s) loaded" in result.stdout  # ... and only analytics
    assert "Traceback" not in result.stderr
