"""The whole demo mesh, materialized at small scale through `mesh materialize`, then inspected."""

from __future__ import annotations

import json
import pickle
import re
import sqlite3
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from conftest import ROOT, TEST_SCALE, run_mesh

from mesh_platform.contracts.loader import load_contract

pytestmark = pytest.mark.slow

PRODUCTS = {
    "policies/policyholders",
    "policies/policies",
    "claims/claims",
    "claims/claim_events",
    "customer_care/conversations",
    "customer_care/claim_contacts",
    "fraud/claim_features",
    "fraud/fraud_scores",
    "analytics/claims_weekly",
    "analytics/loss_ratio",
    "analytics/fraud_hit_rate",
    "analytics/contact_rate",
    "analytics/contact_topics",
}
DBT_PRODUCTS = {"analytics/claims_weekly", "analytics/loss_ratio", "analytics/fraud_hit_rate", "analytics/contact_rate"}
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+44 7700 9\d{5}")


def major(key: str) -> int:
    domain, name = key.split("/")
    return load_contract(ROOT / "domains" / domain / "contracts" / f"{name}.yaml").major


def port(settings, key: str) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(str(Path(settings.lake) / key / f"v{major(key)}")).to_pandas()


def test_materialize_reports_progress_per_domain(materialized_mesh):
    out = materialized_mesh.stdout
    lines = [line for line in out.splitlines() if line.startswith("[run ")]
    order = [line.split("] ", 1)[1].split(":", 1)[0] for line in lines]
    assert order == ["policies", "claims", "customer_care", "fraud", "analytics"]
    assert [line.split("]", 1)[0] for line in lines] == [f"[run {n}" for n in range(1, 6)]  # runs counted, not assets
    assert lines[-1].endswith("(16 of 16 assets started)")
    assert "materializing 16 asset(s) of 5 domain(s) in this process, one run at a time" in out
    assert "done: 5 run(s) of 5 domain(s), 0 failed, 0 asset(s) skipped" in out


def test_runs_log_nothing_at_info_so_mesh_dev_at_warning_level_prints_no_info(materialized_mesh):
    """`mesh dev` runs Dagster at warning level, but a run worker prints its run's log on the same
    console at the instance's level (INFO, so that the UI's run log keeps it). So the platform and the
    demo's domains log nothing at INFO in a run: what a step did is its output metadata."""
    import logging

    instance = dg.DagsterInstance.get()
    runs = instance.get_run_records(dg.RunsFilter(tags={"mesh/launched_by": "mesh-materialize"}))
    assert {r.dagster_run.tags["mesh/domain"] for r in runs} >= {"policies", "claims", "customer_care", "fraud", "analytics"}
    info = [(r.dagster_run.tags["mesh/domain"], e.step_key, e.user_message) for r in runs for e in instance.all_logs(r.dagster_run.run_id)
            if not e.is_dagster_event and e.level == logging.INFO]
    assert not info, info
    # what the landed-file selection said at INFO is on the output instead
    landed = instance.get_latest_materialization_event(dg.AssetKey(["claims", "landed_claims"])).asset_materialization
    assert "landed file(s) have rows on the run's" in landed.metadata["mesh/landed_selection"].value


def test_every_product_is_published_and_recorded(materialized_mesh, settings):
    instance = dg.DagsterInstance.get()
    for key in PRODUCTS:
        df = port(settings, key)
        assert len(df) > 0, key
        event = instance.get_latest_materialization_event(dg.AssetKey(key.split("/")))
        meta = event.asset_materialization.metadata
        assert meta["dagster/row_count"].value == len(df)
        assert meta["dagster/uri"].value.endswith(f"{key}/v{major(key)}")
        domain, name = key.split("/")
        assert meta["mesh/contract_version"].value == load_contract(ROOT / "domains" / domain / "contracts" / f"{name}.yaml").version
    runs = instance.get_run_records(dg.RunsFilter(tags={"mesh/launched_by": "mesh-materialize"}))
    assert {r.dagster_run.tags["mesh/domain"] for r in runs} == {"policies", "claims", "customer_care", "fraud", "analytics"}


def test_outputs_are_consistent_across_domains(materialized_mesh, settings, sources):
    summary = json.loads((sources / "SIMULATION.json").read_text())
    assert summary["scale"] == TEST_SCALE
    policies, claims = port(settings, "policies/policies"), port(settings, "claims/claims")
    assert len(policies) == summary["policies"] and len(claims) == summary["claims"]
    assert set(claims["policy_id"]) <= set(policies["policy_id"])
    scores = port(settings, "fraud/fraud_scores")
    assert set(scores["claim_id"]) == set(claims["claim_id"])
    assert scores["fraud_score"].between(0, 1).all()
    loss = port(settings, "analytics/loss_ratio").set_index("product_line")
    assert loss["policies"].sum() == len(policies)
    assert loss["claims_paid"].sum() == pytest.approx(claims["amount_paid"].sum())
    weekly = port(settings, "analytics/claims_weekly")
    assert weekly["claims_reported"].sum() == len(claims)


def test_contact_details_stay_in_the_owning_domain(materialized_mesh, settings):
    for key in PRODUCTS - {"policies/policyholders"}:
        df = port(settings, key)
        for column in df.columns:
            if df[column].dtype == object or str(df[column].dtype) in ("str", "string"):
                text = df[column].dropna().astype(str)
                assert not text.str.contains(EMAIL).any(), (key, column)
                assert not text.str.contains(PHONE).any(), (key, column)
    holders = port(settings, "policies/policyholders")
    assert holders["email"].str.contains(EMAIL).all()


def lake_strings(lake: Path) -> dict[Path, list[str]]:
    """Every string stored in the lake outside policies/, private areas included, file by file.

    Parquet files give every value of every string-like column; pickles the values of a pickled
    DataFrame and, for anything else, the text in its bytes; any other file its text.
    """
    found: dict[Path, list[str]] = {}
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        if path.relative_to(lake).parts[0] == "policies":
            continue
        values: list[str] = []
        frames = []
        if path.suffix == ".parquet":
            frames.append(pd.read_parquet(path))
        else:
            if path.suffix in (".pickle", ".pkl"):
                obj = pickle.loads(path.read_bytes())
                if isinstance(obj, pd.DataFrame):
                    frames.append(obj)
            values.append(path.read_bytes().decode("utf-8", errors="ignore"))
        for df in frames:
            for column in df.columns:
                if df[column].dtype == object or str(df[column].dtype) in ("str", "string"):
                    values.extend(df[column].dropna().astype(str).tolist())
        found[path] = values
    return found


def digit_runs(text: str) -> list[str]:
    """The digits of every run of nine or more written the way phone numbers are."""
    return [re.sub(r"\D", "", m) for m in re.findall(r"(?<![\w-])[+(]?\d(?:[\s().-]{0,3}\d){8,}", text)]


def test_no_raw_personal_data_is_stored_outside_its_owner(materialized_mesh, settings, sources):
    """Names, emails and phone numbers of policyholders exist at rest only under policies/."""
    with sqlite3.connect(sources / "policy_admin" / "policy_admin.sqlite") as con:
        customers = pd.read_sql("SELECT first_nm, last_nm, email_addr, phone_no FROM customer", con)
    emails = set(customers["email_addr"].str.lower())
    full_names = re.compile("|".join(sorted({re.escape(f"{f} {l}") for f, l in zip(customers["first_nm"], customers["last_nm"])})), re.IGNORECASE)
    # The last nine digits of every number the sources hold: the policyholders' numbers, and every
    # number written in the raw chat export (second numbers included), whatever their shape.
    raw_chats = pd.read_json(sources / "support_chat" / "conversations.jsonl", lines=True)
    numbers = {re.sub(r"\D", "", p)[-9:] for p in customers["phone_no"]}
    numbers |= {run[-9:] for text in raw_chats["transcript"] for run in digit_runs(text)}
    assert len(numbers) > len(customers)
    assert raw_chats["transcript"].str.contains(full_names).any()  # the raw export does name people

    found = lake_strings(Path(settings.lake))
    assert any("_private" in p.parts for p in found)  # private areas are scanned too
    assert any(p.match("customer_care/conversations/v1/*.parquet") for p in found)
    leaks = []
    for path, values in found.items():
        for value in values:
            lowered = value.lower()
            leaks += [(path, "email", e) for e in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", lowered) if e in emails]
            leaks += [(path, "name", m) for m in full_names.findall(value)]
            for run in digit_runs(value):
                leaks += [(path, "phone", run) for i in range(len(run) - 8) if run[i : i + 9] in numbers]
    assert not leaks, leaks[:10]
    transcripts = port(settings, "customer_care/conversations")["transcript"]
    assert transcripts.str.contains(r"\[name\]").any() and transcripts.str.contains(r"\[phone\]").any()
    assert transcripts.str.contains(r"\[email\]").any() and transcripts.str.contains(r"(?:POL|CLM)-\d{7}").all()
    assert not (Path(settings.lake) / "customer_care" / "_private" / "chat_export").exists()


def test_catalog_lists_every_product_with_lineage(materialized_mesh):
    result = run_mesh(["catalog", "--json"])
    assert result.returncode == 0, result.stderr
    products = {p["key"]: p for p in json.loads(result.stdout)["products"]}
    assert set(products) == PRODUCTS
    claims = products["claims/claims"]
    assert claims["owners"] == ["team:claims-operations", "claims-data@acme-insurance.example"]
    assert claims["version"] == "1.0.0" and claims["description"]
    assert claims["upstream"] == ["policies/policies"]
    assert set(claims["downstream"]) == {
        "analytics/claims_weekly", "analytics/loss_ratio", "analytics/contact_rate", "fraud/claim_features"
    }
    assert claims["input_ports"][0]["product"] == "policies.policies" and claims["input_ports"][0]["major"] == 1
    topics = products["analytics/contact_topics"]
    assert topics["input_ports"] == [{"product": "customer_care.conversations", "major": 1, "columns": None, "aggregate": True}]
    assert claims["output_port"].endswith("claims/claims/v1")
    assert claims["row_count"] > 0 and claims["last_materialized"]
    # fraud_scores depends on claim_features, and on claim events (the labels) through the private
    # model: lineage sees through it
    assert products["fraud/fraud_scores"]["upstream"] == ["claims/claim_events", "fraud/claim_features"]
    text = run_mesh(["catalog"]).stdout
    assert "fraud/fraud_scores  v1.2.0" in text and "last materialized:" in text


def test_selection_materializes_downstream_only(materialized_mesh, settings):
    before = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey(["policies", "policies"])).run_id
    result = run_mesh(["materialize", "--in-process", "--select", "fraud/fraud_scores*"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fraud: materializing fraud_scores" in result.stdout
    assert "analytics: materializing fraud_hit_rate" in result.stdout
    assert "fraud_hit_rate 4 rows" in result.stdout
    assert "policies:" not in result.stdout
    after = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey(["policies", "policies"])).run_id
    assert before == after


def test_a_selection_can_leave_assets_out():
    """``claims*,-fraud/fraud_model``: a new day of claims as automation runs it (the model retrains on
    its own schedule); the partitions benchmark times a new day so."""
    from conftest import ROOT

    from mesh_platform.mesh.materialize import select
    from mesh_platform.mesh.workspace import Mesh

    mesh = Mesh.load(ROOT / "workspace.yaml")
    model = dg.AssetKey(["fraud", "fraud_model"])
    everything = select(mesh, "claims*")
    assert model in everything and dg.AssetKey(["fraud", "fraud_scores"]) in everything
    assert select(mesh, "claims*,-fraud/fraud_model") == everything - {model}
    assert select(mesh, "-analytics") == select(mesh, None) - select(mesh, "analytics")
    assert select(mesh, "claims*,-fraud*") == everything - select(mesh, "fraud*")


def test_unknown_selection_is_a_usage_error(materialized_mesh):
    result = run_mesh(["materialize", "--in-process", "--select", "claimz"])
    assert result.returncode == 2
    assert "'claimz' matches no domain or asset" in result.stderr


def test_validate_passes_on_the_demo_mesh():
    result = run_mesh(["validate"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 domain(s) loaded, 13 product(s), 13 input port(s), 13 contract(s): OK" in result.stdout


def test_every_product_passed_its_quality_checks(materialized_mesh):
    instance = dg.DagsterInstance.get()
    for key in PRODUCTS:
        asset_key = dg.AssetKey(key.split("/"))
        mat = instance.get_latest_materialization_event(asset_key).asset_materialization
        assert mat.metadata["mesh/quality_checks"].value > 2, key
        assert mat.metadata["mesh/quality_report"].value.endswith(".html")
        if key in DBT_PRODUCTS:  # dbt tests are its checks; the contract rules ran before publish
            assert all(mat.metadata["mesh/quality"].value.values()), key
            continue
        check_keys = [dg.AssetCheckKey(asset_key, "contract_schema")]
        executions = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
        evaluation = executions[check_keys[0]].event.dagster_event.event_specific_data
        assert evaluation.passed, key
