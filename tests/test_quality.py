"""Write-audit-publish: contract quality rules as Great Expectations results and Dagster asset checks."""

from __future__ import annotations

import json
import urllib.error
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pandas as pd
import pytest
from deltalake import DeltaTable

from mesh_platform import Domain
from mesh_platform.products.automation import sla_schedule
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.quality.rules import rules_for

FIXTURE = Path(__file__).parent / "fixtures" / "quality_mesh"
GOOD = pd.DataFrame(
    {"order_id": ["O-1", "O-2", "O-3"], "status": ["open", "shipped", "open"], "amount": [10.0, 20.0, 30.0], "coupon": [None, None, "X"]}
)


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """The fixture domain, with a mutable `orders` output and a downstream product."""
    monkeypatch.setenv("MESH_DOMAINS", str(FIXTURE))
    lake = tmp_path / "lake"
    monkeypatch.setenv("MESH_LAKE", str(lake))
    domain = Domain.load(FIXTURE / "shop" / "definitions.py")
    state = {"orders": GOOD}

    @domain.product("orders")
    def orders() -> pd.DataFrame:
        return state["orders"]

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("status").size().rename("orders").reset_index()

    assets, _ = domain.build_assets(ContractRegistry.discover(FIXTURE))
    instance = dg.DagsterInstance.ephemeral()

    def run():
        return dg.materialize(assets, resources={"io_manager": MeshIOManager(lake=str(lake))}, instance=instance, raise_on_error=False)

    return state, run, instance, lake


def checks(instance, key) -> dict:
    out = {}
    for name in ("contract_schema", *dict.fromkeys(r.check_name for r in rules_for(ContractRegistry.discover(FIXTURE).get("shop.orders")))):
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(dg.AssetKey(key), name)])
        for execution in record.values():
            evaluation = execution.event.dagster_event.event_specific_data
            if not hasattr(evaluation, "passed"):  # planned, never evaluated (the step stopped before)
                continue
            out[name] = (evaluation.passed, evaluation.severity, {k: v.value for k, v in evaluation.metadata.items()})
    return out


def test_rules_come_from_property_constraints_and_quality_entries():
    contract = ContractRegistry.discover(FIXTURE).get("shop.orders")
    rules = {r.name: r for r in rules_for(contract)}
    assert set(rules) == {
        "order_id_not_null", "order_id_unique", "order_id_pattern", "status_not_null", "status_invalid_values",
        "amount_not_null", "amount_range", "coupon_mostly_empty", "row_count",
    }
    assert rules["coupon_mostly_empty"].blocking is False and rules["coupon_mostly_empty"].unit == "percent"
    assert rules["amount_range"].params == {"minimum": 0, "maximum": 1000}
    assert rules["status_invalid_values"].source == "schema[orders].properties[status].quality[0]"
    # each required column's rule is evaluated, and the three are one asset check
    assert {n for n, r in rules.items() if r.check_name == "required_columns"} == {"order_id_not_null", "status_not_null", "amount_not_null"}
    from mesh_platform.quality.checks import check_specs

    specs = {s.name: s for s in check_specs(dg.AssetKey(["shop", "orders"]), contract)}
    assert "required_columns" in specs and specs["required_columns"].blocking
    assert not any(name.endswith("_not_null") for name in specs)


def served(lake, path: str) -> str:
    """GET ``path`` from `mesh reports serve`'s server over ``lake`` (loopback, an ephemeral port)."""
    import threading
    import urllib.request

    from mesh_platform.quality.reports import make_server

    server = make_server(str(lake), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}{path}", timeout=180) as response:  # a first page imports GX
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_good_data_publishes_with_checks_report_freshness(shop, monkeypatch):
    state, run, instance, lake = shop
    import sys

    with monkeypatch.context() as m:  # the run never imports Great Expectations: rendering is off its critical path
        m.setitem(sys.modules, "mesh_platform.quality.gx", None)
        result = run()
    assert result.success
    found = checks(instance, ["shop", "orders"])
    assert all(passed for passed, _, _ in found.values()), found
    assert found["amount_range"][2]["unexpected_count"] == 0
    assert found["required_columns"][2]["columns"] == {"order_id": 0, "status": 0, "amount": 0}
    assert found["coupon_mostly_empty"][1] == dg.AssetCheckSeverity.WARN
    mat = instance.get_latest_materialization_event(dg.AssetKey(["shop", "orders"])).asset_materialization
    url = urlparse(mat.metadata["mesh/quality_report"].value)
    assert url.scheme == "http", url  # a link a browser on another machine opens, not a file:// path
    report = lake / url.path.lstrip("/")
    assert not report.exists() and report.with_name(report.stem + ".report.json").exists()  # the run wrote the data only
    assert "Expectation Validation Result" in served(lake, url.path)  # rendered when first asked for
    assert report.exists()
    with pytest.raises(urllib.error.HTTPError, match="404"):  # the report server serves reports, never data
        served(lake, "/shop/orders/v1/_delta_log/00000000000000000000.json")
    gx_json = json.loads(report.with_suffix(".json").read_text())
    assert gx_json["success"] is True and gx_json["statistics"]["evaluated_expectations"] == 9
    assert {r["expectation_config"]["type"] for r in gx_json["results"]} >= {
        "expect_column_values_to_be_in_set", "expect_column_values_to_be_between", "expect_column_values_to_match_regex",
        "expect_table_row_count_to_be_between", "expect_column_values_to_be_unique",
    }
    assert (lake / "shop" / "order_stats" / "v1" / "_delta_log").is_dir()


def test_bad_data_is_never_published_and_downstream_does_not_run(shop):
    state, run, instance, lake = shop
    assert run().success
    stats_before = instance.get_latest_materialization_event(dg.AssetKey(["shop", "order_stats"])).run_id
    state["orders"] = pd.DataFrame(
        {
            "order_id": ["O-1", "O-1", "bad", None],
            "status": ["open", "lost", "open", "open"],
            "amount": [10.0, -5.0, 2000.0, 1.0],
            "coupon": ["A", "B", "C", "D"],
        }
    )
    result = run()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message + (failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else "")
    assert "shop/orders failed" in message and "nothing was published" in message
    assert "column 'status': status_invalid_values" in message and "'lost'" in message
    assert "column 'amount': amount_range" in message and "2000.0" in message
    assert "column 'order_id': order_id_unique" in message and "'O-1'" in message
    assert "column 'order_id': order_id_not_null" in message
    found = checks(instance, ["shop", "orders"])
    assert found["status_invalid_values"][0] is False and found["status_invalid_values"][2]["unexpected_count"] == 1
    assert found["coupon_mostly_empty"][0] is False  # the warning fails too, but is not what blocked
    passed, severity, meta = found["required_columns"]
    assert passed is False and severity == dg.AssetCheckSeverity.ERROR
    assert meta["columns"] == {"order_id": 1, "status": 0, "amount": 0} and meta["observed_value"] == 1
    published = DeltaTable(str(lake / "shop" / "orders" / "v1")).to_pandas()
    assert published["order_id"].tolist() == ["O-1", "O-2", "O-3"]  # the last good version
    assert instance.get_latest_materialization_event(dg.AssetKey(["shop", "order_stats"])).run_id == stats_before


def test_wrong_types_fail_the_schema_check(shop):
    state, run, instance, lake = shop
    state["orders"] = GOOD.assign(amount=["ten", "20", "30"])
    result = run()
    assert not result.success
    found = checks(instance, ["shop", "orders"])
    assert found["contract_schema"][0] is False
    assert "column 'amount': type" in json.dumps(found["contract_schema"][2]["violations"])
    assert not (lake / "shop" / "orders" / "v1" / "_delta_log").exists()


def test_a_failing_warning_still_publishes(shop):
    state, run, instance, lake = shop
    state["orders"] = GOOD.assign(coupon=["A", "B", "C"])
    assert run().success
    found = checks(instance, ["shop", "orders"])
    assert found["coupon_mostly_empty"][:2] == (False, dg.AssetCheckSeverity.WARN)
    mat = instance.get_latest_materialization_event(dg.AssetKey(["shop", "orders"])).asset_materialization
    assert mat.metadata["mesh/quality_warnings"].value == 1


def test_sla_becomes_freshness_policy_and_automation():
    registry = ContractRegistry.discover(FIXTURE)
    domain = Domain.load(FIXTURE / "shop" / "definitions.py")

    @domain.product("orders")
    def orders() -> pd.DataFrame:  # pragma: no cover - never run
        return GOOD

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders):  # pragma: no cover - never run
        return orders

    assets = {a.key.to_user_string(): a for a in domain.build_assets(registry)[0]}
    spec = next(iter(assets["shop/orders"].specs))
    assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(hours=2)
    assert spec.automation_condition is None  # fed by its source only: the domain's SLA schedule refreshes it
    stats = next(iter(assets["shop/order_stats"].specs))
    assert stats.freshness_policy is None  # no latency SLA in that contract
    assert stats.automation_condition.get_label() == "eager"
    schedule = sla_schedule("shop", [c for c, _ in domain.products.values()])
    assert schedule.cron_schedule == "0 * * * *" and schedule.name == "shop_sla_schedule"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # MESH_AUTOMATION is off in tests


def test_a_duplicate_key_found_while_the_write_runs_publishes_nothing(shop, monkeypatch):
    """The primary key's rule runs while the IO manager writes (its commit waits for it): a duplicate
    key alone fails the step with the rule's check recorded, and the port keeps its Delta version."""
    from mesh_platform.storage import gate

    monkeypatch.setattr(gate, "OVERLAP_MIN_ROWS", 1)  # overlap even these 3 rows (as a long table's)
    state, run, instance, lake = shop
    assert run().success
    found = checks(instance, ["shop", "orders"])
    assert found["order_id_unique"][0] is True and found["order_id_unique"][2]["unexpected_count"] == 0  # reported after the output
    mat = instance.get_latest_materialization_event(dg.AssetKey(["shop", "orders"])).asset_materialization
    assert mat.metadata["mesh/delta_version"].value == 0 and mat.metadata["mesh/quality_checks"].value == 10
    stats_before = instance.get_latest_materialization_event(dg.AssetKey(["shop", "order_stats"])).run_id

    state["orders"] = GOOD.assign(order_id=["O-1", "O-2", "O-1"])  # every other rule passes
    result = run()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    message = error.message + (error.cause.message if error.cause else "")
    assert "shop/orders failed 1 blocking quality check(s); nothing was published" in message
    assert "column 'order_id': order_id_unique" in message and "'O-1'" in message
    found = checks(instance, ["shop", "orders"])
    assert found["order_id_unique"][0] is False and found["order_id_unique"][2]["unexpected_count"] == 1
    assert found["status_invalid_values"][0] is True
    assert DeltaTable(str(lake / "shop" / "orders" / "v1")).version() == 0  # nothing committed
    assert instance.get_latest_materialization_event(dg.AssetKey(["shop", "orders"])).asset_materialization.metadata["mesh/delta_version"].value == 0
    assert DeltaTable(str(lake / "shop" / "orders" / "v1")).to_pandas()["order_id"].tolist() == ["O-1", "O-2", "O-3"]
    assert instance.get_latest_materialization_event(dg.AssetKey(["shop", "order_stats"])).run_id == stats_before
    reports = sorted((lake / "shop" / "orders" / "_quality").glob(f"{result.run_id}.report.json"))
    assert reports, "the failed run's quality report"
    key = next(r for r in json.loads(reports[0].read_text())["results"] if r["rule"]["name"] == "order_id_unique")
    assert key["passed"] is False and key["unexpected_count"] == 1  # the report has the key's result


def test_a_contracts_sql_rule_reaches_nothing_outside_its_table(tmp_path):
    """Quality rules run in the process's scratch DuckDB database: a contract's SQL cannot read a
    file or change a setting for the rules after it, and what one evaluation registers is not seen
    by another (each has its own connection)."""
    import threading

    import duckdb
    import pyarrow as pa

    from mesh_platform.foundations import scratch_db
    from mesh_platform.quality.evaluate import evaluate
    from mesh_platform.quality.rules import Rule

    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    table = pa.table({"amount": [1.0, 2.0, None]})

    def sql(query: str) -> Rule:
        return Rule("probe", "sql", None, "mustBe", 0, True, "probe", "contract", params={"query": query})

    with pytest.raises(duckdb.Error, match="(?i)permission|disabled|file system"):
        evaluate(table, [sql(f"SELECT count(*) FROM read_csv('{secret}')")], "t/probe")
    with pytest.raises(duckdb.Error, match="(?i)configuration"):
        evaluate(table, [sql("SET threads = 1")], "t/probe")
    report = evaluate(table, [sql("SELECT count(*) FROM {object} WHERE amount IS NULL")], "t/probe")
    assert report.results[0].value == 1.0 and not report.results[0].passed
    # two connections at once, each with a table of the same name: each sees its own
    seen = {}

    def count(rows: int) -> None:
        with scratch_db.connect() as con:
            con.register("mine", pa.table({"x": list(range(rows))}))
            seen[rows] = con.execute("SELECT count(*) FROM mine").fetchone()[0]

    threads = [threading.Thread(target=count, args=(n,)) for n in (3, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == {3: 3, 5: 5}
