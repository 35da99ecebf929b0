"""OpenLineage: every run's events, read back from the transport and checked against the runs that happened.

Fast tests run the quality fixture's small domain (real Dagster runs, real IO manager and checks)
and evaluate the domain's lineage sensors on those runs; the slow test reads the events that the
session's `mesh materialize` emitted for the whole demo mesh (cross-domain input ports).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from conftest import ROOT
from test_quality import FIXTURE, GOOD, shop  # noqa: F401  (the fixture domain and its runs)

from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.lineage.emit import emit_run, read_events
from mesh_platform.lineage.sensors import lineage_sensors
from mesh_platform.foundations.settings import MeshSettings


def of_lake(lake: Path) -> MeshSettings:
    """The settings of the mesh whose lake is ``lake`` (the session's home): what a code location passes down."""
    from dataclasses import replace

    return replace(MeshSettings.from_env(), lake=str(lake))


@pytest.fixture
def events_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "lineage" / "events.jsonl"
    monkeypatch.setenv("MESH_LINEAGE_FILE", str(path))
    monkeypatch.setenv("MESH_QUALITY_REPORTS", "0")  # checks still run; no Data Docs page (faster)
    for var in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(var)
    return path


def of_run(events: list[dict], run_id: str) -> list[dict]:
    return [e for e in events if e["run"]["runId"] == run_id]


def by_asset(datasets: list[dict]) -> dict[str, dict]:
    return {d["facets"]["mesh"]["assetKey"]: d for d in datasets}


def materialization(instance, run_id: str, key: list[str]):
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return next(r.event_log_entry.asset_materialization for r in records if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey(key))


def evaluated_checks(instance, run_id: str, key: list[str]) -> dict[str, bool]:
    """The run's check results on ``key`` as OpenLineage names them: ``required_columns`` (one Dagster
    check for every required column) is one ``<column>_not_null`` assertion per column there."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    found = {}
    for r in records:
        evaluation = r.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key != dg.AssetKey(key):
            continue
        if evaluation.check_name == "required_columns":
            nulls = evaluation.metadata["columns"].value
            assert nulls, evaluation
            found.update({f"{column}_not_null": not count for column, count in nulls.items()})
        else:
            found[evaluation.check_name] = evaluation.passed
    return found


def test_a_successful_run_emits_start_and_complete_with_its_datasets(shop, events_file):  # noqa: F811
    state, run, instance, lake = shop
    result = run()
    assert result.success
    sent = emit_run(instance, result.run_id, of_lake(lake))
    events = of_run(read_events(events_file), result.run_id)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"] == [e.eventType.value for e in sent]
    start, complete = events
    assert start["eventTime"] <= complete["eventTime"]
    assert complete["job"] == start["job"] and complete["job"]["namespace"] == "mesh"
    assert complete["job"]["name"] == "shop.assets"  # the domain's implicit asset job
    assert complete["job"]["facets"]["ownership"]["owners"] == [{"name": "team:shop-data"}]
    assert complete["run"]["facets"]["mesh"]["dagsterRunId"] == result.run_id

    outputs = by_asset(complete["outputs"])
    assert set(outputs) == {"shop/orders", "shop/order_stats"}
    assert set(by_asset(start["outputs"])) == set(outputs)
    orders = outputs["shop/orders"]
    contract = ContractRegistry.discover(FIXTURE).get("shop.orders")
    assert (orders["namespace"], orders["name"]) == ("file", str(lake / "shop" / "orders" / "v1"))
    assert [f["name"] for f in orders["facets"]["schema"]["fields"]] == contract.column_names
    assert [f["type"] for f in orders["facets"]["schema"]["fields"]] == [c.logical_type for c in contract.columns]
    assert [o["name"] for o in orders["facets"]["ownership"]["owners"]] == contract.owners
    assert orders["facets"]["symlinks"]["identifiers"][0]["name"] == "shop.orders"
    written = materialization(instance, result.run_id, ["shop", "orders"])
    assert orders["facets"]["version"]["datasetVersion"] == written.tags["dagster/data_version"]
    assert orders["facets"]["mesh"]["codeVersion"] == written.tags["dagster/code_version"]
    assert "tableVersion" not in orders["facets"]["mesh"]  # a field for ports with table versions (later); nulls are left out
    assert orders["outputFacets"]["outputStatistics"]["rowCount"] == len(GOOD)
    assertions = {a["name"]: a for a in orders["facets"]["dataQualityAssertions"]["assertions"]}
    checks = evaluated_checks(instance, result.run_id, ["shop", "orders"])
    assert {n: a["success"] for n, a in assertions.items()} == checks
    assert assertions["status_invalid_values"]["column"] == "status"
    assert assertions["coupon_mostly_empty"]["severity"] == "warn"
    assert (assertions["amount_not_null"]["assertion"], assertions["amount_not_null"]["column"]) == ("not_null", "amount")
    assert "version" not in by_asset(start["outputs"])["shop/orders"]["facets"]  # START: nothing written yet
    assert complete["inputs"] == []  # order_stats read orders from this very run
    tests = {t["name"]: t["status"] for t in complete["run"]["facets"]["test"]["tests"]}
    assert tests["shop/orders:status_invalid_values"] == "pass"


def test_a_run_reading_an_earlier_version_names_it_as_input(shop, events_file):  # noqa: F811
    from mesh_platform import Domain
    from mesh_platform.storage.io_manager import MeshIOManager

    state, run, instance, lake = shop
    first = run()
    assert first.success
    domain = Domain.load(FIXTURE / "shop" / "definitions.py")

    @domain.product("orders")
    def orders() -> pd.DataFrame:  # pragma: no cover - not selected
        return GOOD

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("status").size().rename("orders").reset_index()

    assets, _ = domain.build_assets(ContractRegistry.discover(FIXTURE))
    second = dg.materialize(assets, selection=[dg.AssetKey(["shop", "order_stats"])], instance=instance,
                            resources={"io_manager": MeshIOManager(lake=str(lake))})
    emit_run(instance, second.run_id, of_lake(lake))
    complete = of_run(read_events(events_file), second.run_id)[-1]
    assert set(by_asset(complete["outputs"])) == {"shop/order_stats"}
    inputs = by_asset(complete["inputs"])
    assert set(inputs) == {"shop/orders"}
    read = inputs["shop/orders"]
    assert read["name"] == str(lake / "shop" / "orders" / "v1")
    assert read["facets"]["version"]["datasetVersion"] == materialization(instance, first.run_id, ["shop", "orders"]).tags["dagster/data_version"]
    assert read["facets"]["mesh"]["materializationRunId"] == first.run_id


def test_a_failed_run_emits_fail_with_the_error_and_the_failed_checks(shop, events_file):  # noqa: F811
    state, run, instance, lake = shop
    state["orders"] = GOOD.assign(status=["open", "lost", "open"])
    result = run()
    assert not result.success
    emit_run(instance, result.run_id, of_lake(lake))
    start, fail = of_run(read_events(events_file), result.run_id)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    error = fail["run"]["facets"]["errorMessage"]
    assert "shop/orders failed" in error["message"] and error["programmingLanguage"] == "python" and error["stackTrace"]
    assert set(by_asset(start["outputs"])) == {"shop/orders", "shop/order_stats"}  # what it set out to write
    # nothing was published: the refused dataset carries the assertions that failed, and no version
    refused = by_asset(fail["outputs"])
    assert set(refused) == {"shop/orders"}
    assert "version" not in refused["shop/orders"]["facets"]
    assertions = {a["name"]: a["success"] for a in refused["shop/orders"]["facets"]["dataQualityAssertions"]["assertions"]}
    assert assertions == evaluated_checks(instance, result.run_id, ["shop", "orders"])
    assert assertions["status_invalid_values"] is False
    tests = {t["name"]: t["status"] for t in fail["run"]["facets"]["test"]["tests"]}
    assert tests["shop/orders:status_invalid_values"] == "fail"


def test_the_domain_sensors_emit_runs_dagster_launched_and_skip_mesh_materialize(shop, events_file):  # noqa: F811
    state, run, instance, lake = shop
    complete_sensor, fail_sensor = lineage_sensors("shop", of_lake(lake))
    assert complete_sensor.default_status == dg.DefaultSensorStatus.RUNNING

    ok = run()
    success_event = instance.all_logs(ok.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
    context = dg.build_run_status_sensor_context(sensor_name=complete_sensor.name, dagster_instance=instance,
                                                 dagster_run=instance.get_run_by_id(ok.run_id), dagster_event=success_event)
    assert complete_sensor(context) is None
    assert [e["eventType"] for e in of_run(read_events(events_file), ok.run_id)] == ["START", "COMPLETE"]

    state["orders"] = GOOD.assign(amount=["ten", "20", "30"])
    bad = run()
    failure_event = instance.all_logs(bad.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
    context = dg.build_run_status_sensor_context(sensor_name=fail_sensor.name, dagster_instance=instance,
                                                 dagster_run=instance.get_run_by_id(bad.run_id), dagster_event=failure_event).for_run_failure()
    fail_sensor(context)
    assert [e["eventType"] for e in of_run(read_events(events_file), bad.run_id)] == ["START", "FAIL"]

    # runs that `mesh materialize` executes emit their own events: the sensor does not repeat them
    tagged = instance.get_run_by_id(ok.run_id).with_tags({"mesh/launched_by": "mesh-materialize"})
    context = dg.build_run_status_sensor_context(sensor_name=complete_sensor.name, dagster_instance=instance,
                                                 dagster_run=tagged, dagster_event=success_event)
    before = len(read_events(events_file))
    assert "mesh materialize" in complete_sensor(context).skip_message
    assert len(read_events(events_file)) == before


def test_lineage_can_be_switched_off_and_a_broken_transport_never_fails_the_sensor(shop, events_file, monkeypatch, tmp_path):  # noqa: F811
    state, run, instance, lake = shop
    ok = run()
    monkeypatch.setenv("MESH_LINEAGE", "off")
    assert emit_run(instance, ok.run_id, of_lake(lake)) == []
    assert not events_file.exists()
    monkeypatch.delenv("MESH_LINEAGE")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MESH_LINEAGE_FILE", str(blocker / "events.jsonl"))  # its parent is a file
    complete_sensor, _ = lineage_sensors("shop", of_lake(lake))
    success_event = instance.all_logs(ok.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
    context = dg.build_run_status_sensor_context(sensor_name=complete_sensor.name, dagster_instance=instance,
                                                 dagster_run=instance.get_run_by_id(ok.run_id), dagster_event=success_event)
    assert "not sent" in complete_sensor(context).skip_message


def test_openlineage_url_sends_over_http(shop, monkeypatch):  # noqa: F811
    """OpenLineage's own configuration wins: OPENLINEAGE_URL posts each event to a lineage server."""
    import http.server
    import threading

    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append({"path": self.path, "event": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    before = set(os.environ)
    try:
        state, run, instance, lake = shop
        ok = run()
        monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}")
        emit_run(instance, ok.run_id, of_lake(lake))
    finally:
        server.shutdown()
        server.server_close()
        # the client turns OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__* variables of this process;
        # left behind, they would send every later test's events (and `mesh` subprocesses') nowhere
        for var in set(os.environ) - before:
            os.environ.pop(var)
    assert [r["path"] for r in received] == ["/api/v1/lineage"] * 2
    assert [r["event"]["eventType"] for r in received] == ["START", "COMPLETE"]
    assert {r["event"]["run"]["runId"] for r in received} == {ok.run_id}


def mesh_cli(args: list[str]):
    """The `mesh` command line in this process (the domains are imported once per session)."""
    from click.testing import CliRunner

    from mesh_platform.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_unknown_run_is_a_clear_error(events_file):
    result = mesh_cli(["lineage", "emit", "no-such-run"])
    assert result.exit_code == 1
    assert "no run 'no-such-run' in the Dagster instance" in result.output
    assert not events_file.exists()


# -- the mesh as a graph -------------------------------------------------------------------------


def test_lineage_export_writes_the_mesh_as_json_and_graphml(tmp_path):
    out = tmp_path / "out"
    result = mesh_cli(["lineage", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "mesh-lineage.json").read_text())
    nodes = {n["id"]: n for n in graph["nodes"]}
    registry = ContractRegistry.discover(ROOT / "domains")
    assert {n["name"] for n in nodes.values() if n["type"] == "domain"} == {"policies", "claims", "customer_care", "fraud", "analytics"}
    assert {n["contract_id"] for n in nodes.values() if n["type"] == "product"} == {c.id for c in registry}
    assert sum(n["type"] == "column" for n in nodes.values()) == sum(len(c.columns) for c in registry)
    edges = {(e["source"], e["target"], e["type"]): e for e in graph["edges"]}
    assert ("domain:policies", "product:policies/policyholders", "owns") in edges
    assert ("product:policies/policyholders", "column:policies/policyholders.email", "has_column") in edges
    feeds = edges[("product:claims/claims", "product:fraud/claim_features", "feeds")]
    assert feeds["major"] == 1 and "claim_id" in feeds["columns"]
    assert ("product:fraud/claim_features", "column:claims/claims.claim_id", "reads") in edges
    assert ("domain:fraud", "product:claims/claims", "consumes") in edges
    # a private intermediate's reads (fraud's model, the labels) are its domain's
    assert edges[("domain:fraud", "column:claims/claim_events.event_type", "reads")]["asset"] == "fraud_model"
    assert ("domain:fraud", "product:claims/claim_events", "consumes") in edges
    assert edges[("product:customer_care/conversations", "product:analytics/contact_topics", "feeds")]["aggregate"] is True
    grant = edges[("product:policies/policyholders", "domain:customer_care", "grant")]
    assert grant["purpose"] and grant["grants_file"].endswith("policies/grants.yaml")
    for (source, target, _), _edge in edges.items():
        assert source in nodes and target in nodes

    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    doc = ET.parse(out / "mesh-lineage.graphml").getroot()
    keys = {k.get("id"): k.get("attr.name") for k in doc.findall("g:key", ns)}
    graphml_nodes = doc.findall("g:graph/g:node", ns)
    graphml_edges = doc.findall("g:graph/g:edge", ns)
    assert {n.get("id") for n in graphml_nodes} == set(nodes)
    assert len(graphml_edges) == len(graph["edges"])
    email = next(n for n in graphml_nodes if n.get("id") == "column:policies/policyholders.email")
    assert {keys[d.get("key")]: d.text for d in email.findall("g:data", ns)}["classification"] == "pii"


def test_lineage_export_to_an_unwritable_place_is_a_clear_error_and_writes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    result = mesh_cli(["lineage", "export", "--out", str(blocker / "out")])
    assert result.exit_code == 1
    assert "cannot write the lineage graph" in result.output
    assert blocker.read_text() == "keep"


# -- the whole mesh, as `mesh materialize` ran it -------------------------------------------------


@pytest.mark.slow
def test_mesh_materialize_emits_every_run_with_its_input_ports(materialized_mesh, mesh_home, settings):
    from mesh_platform.governance.audit import audit_records
    from mesh_platform.mesh.instance import local_instance

    events = read_events(mesh_home / "lineage" / "events.jsonl")
    instance = local_instance(settings)
    runs = [r for r in instance.get_runs() if r.run_id in materialized_mesh.run_ids]  # not other tests' runs
    assert {r.tags["mesh/launched_by"] for r in runs} == {"mesh-materialize"}
    assert {r.tags["mesh/domain"] for r in runs} >= {"policies", "claims", "customer_care", "fraud", "analytics"}
    for r in runs:
        emitted = of_run(events, r.run_id)
        assert [e["eventType"] for e in emitted] == ["START", "COMPLETE" if r.status == dg.DagsterRunStatus.SUCCESS else "FAIL"], (r.run_id, r.tags, r.status)
        complete = emitted[-1]
        assert complete["job"]["name"] == f"{r.tags['mesh/domain']}.assets"
        written = {rec.event_log_entry.asset_materialization.asset_key.to_user_string()
                   for rec in instance.get_records_for_run(r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records}
        assert set(by_asset(complete["outputs"])) == written
    fraud = next(r for r in reversed(runs) if r.tags["mesh/domain"] == "fraud")
    complete = of_run(events, fraud.run_id)[-1]
    inputs = by_asset(complete["inputs"])
    keys = sorted({dg.AssetKey(k.split("/")) for k in inputs}, key=str)
    reads = [a for a in audit_records(instance, keys) if a.kind == "read" and a.run_id == fraud.run_id]
    assert {a.asset_key for a in reads} <= set(inputs)
    assert {"claims/claims", "policies/policies", "customer_care/claim_contacts"} <= set(inputs)
    for a in reads:
        facet = inputs[a.asset_key]["inputFacets"]["mesh"]
        assert (facet["consumer"], facet["columns"], facet["rows"]) == ("fraud", a.columns, a.rows)
        producer = instance.get_latest_materialization_event(dg.AssetKey(a.asset_key.split("/")))
        assert inputs[a.asset_key]["facets"]["mesh"]["materializationRunId"] is not None
        assert producer is not None
    claims = inputs["claims/claims"]
    assert claims["facets"]["schema"]["fields"][0]["name"] == "claim_id"
    assert claims["facets"]["symlinks"]["identifiers"][0]["name"] == "claims.claims"


def test_lineage_export_writes_under_mesh_home_by_default_not_into_the_project(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    before = set(ROOT.glob("mesh-lineage.*"))
    result = mesh_cli(["lineage", "export"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "lineage" / "mesh-lineage.json").exists()
    assert (tmp_path / "home" / "lineage" / "mesh-lineage.graphml").exists()
    assert set(ROOT.glob("mesh-lineage.*")) == before
    # and it says where, by absolute path
    written = f"wrote {tmp_path / 'home' / 'lineage' / 'mesh-lineage.json'}, {tmp_path / 'home' / 'lineage' / 'mesh-lineage.graphml'}"
    assert result.output.rstrip().endswith(written), result.output
