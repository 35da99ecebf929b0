"""Daily-partitioned products (mesh_platform.products.partitions), through Dagster and the `mesh` command.

- a contract's partitioning is checked when it loads (file and field named);
- a partition run replaces its days only, in one Delta commit, and records one materialization per
  day; a partitioned consumer reads its days, an unpartitioned one everything;
- a row outside the run's days, a primary key already on another day, and an unknown partition key
  each fail naming the port and partition and publish nothing;
- the landing sensor requests only the days new files touch;
- end to end on the demo mesh: one new day of landed claims through claims -> fraud -> analytics.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import ROOT, run_mesh
from deltalake import DeltaTable

from mesh_platform.foundations import metadata as md
from mesh_platform.products import partitions
from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake
from mesh_platform.mesh.usage import DEFAULT_PRICES, product_usage

EVENTS = dg.AssetKey(["claims", "claim_events"])


@pytest.mark.parametrize(
    "edit, field, message",
    [
        (lambda raw: raw.update(customProperties=[p for p in raw["customProperties"] if p["property"] != "partitioning"]),
         "customProperties[partitioning].value", "says where its partitions start"),
        (lambda raw: _partitioning(raw).update(start="May 1st"), "customProperties[partitioning].value.start", "YYYY-MM-DD"),
        (lambda raw: _partitioning(raw).update(granularity="hourly"), "customProperties[partitioning].value.granularity", "only daily"),
        (lambda raw: _column(raw, "claim_id").update(partitioned=True), "schema[claim_events].properties[occurred_at].partitioned", "one column"),
        (lambda raw: (_column(raw, "occurred_at").update(partitioned=False), _column(raw, "event_type").update(partitioned=True)),
         "schema[claim_events].properties[event_type].logicalType", "date or timestamp"),
    ],
)
def test_a_malformed_partitioning_fails_at_contract_load_naming_file_and_field(tmp_path, edit, field, message):
    import yaml

    from mesh_platform.contracts.loader import ContractError, load_contract

    raw = yaml.safe_load((ROOT / "domains/claims/contracts/claim_events.yaml").read_text())
    edit(raw)
    path = tmp_path / "claim_events.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ContractError) as exc:
        load_contract(path)
    found = [p for p in exc.value.problems if p.field == field]
    assert found and message in found[0].message and found[0].file.endswith("claim_events.yaml"), exc.value.problems


def _partitioning(raw: dict) -> dict:
    return next(p for p in raw["customProperties"] if p["property"] == "partitioning")["value"]


def _column(raw: dict, name: str) -> dict:
    return next(c for c in raw["schema"][0]["properties"] if c["name"] == name)


def day_events(day: str, ids: list[int], kind: str = "opened") -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": ids, "claim_id": [f"C{i}" for i in ids], "event_type": [kind] * len(ids),
        "occurred_at": pd.to_datetime([f"{day} 10:00"] * len(ids)),
    })


def partitioned_assets(frames: dict[str, pd.DataFrame], seen: dict):
    """claims/claim_events published per day under its real contract, a partitioned consumer of the
    same day and an unpartitioned consumer of every day."""
    contract = mesh_registry().get("claims.claim_events")
    daily = partitions.of(contract).definition
    columns = {md.CONTRACT_ID: contract.id, md.CONSUMER_COLUMNS: ["event_id", "occurred_at"]}

    @dg.asset(key=EVENTS, metadata={md.CONTRACT_ID: contract.id}, partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())  # as products are
    def claim_events(context):
        return pd.concat([frames[k] for k in context.partition_keys], ignore_index=True)

    @dg.asset(key=["fraud", "daily_reader"], partitions_def=daily, ins={"ev": dg.AssetIn(key=EVENTS, metadata=columns)})
    def daily_reader(context, ev) -> None:
        seen[context.partition_key] = ev

    @dg.asset(key=["fraud", "all_reader"], ins={"ev": dg.AssetIn(key=EVENTS, metadata=columns)})
    def all_reader(ev) -> None:
        seen["all"] = ev

    return claim_events, daily_reader, all_reader


def table_rows(lake: Path) -> pd.DataFrame:
    return DeltaTable(str(lake / Lake.port_path("claims", "claim_events", 1))).to_pandas().sort_values("event_id", ignore_index=True)


def failure(result) -> str:
    return result.get_step_failure_events()[0].step_failure_data.error.to_string()


def test_a_partition_run_replaces_its_days_only_and_consumers_read_their_days(tmp_path):
    frames = {"2026-06-01": day_events("2026-06-01", [1, 2]), "2026-06-02": day_events("2026-06-02", [3, 4, 5])}
    seen: dict = {}
    producer, daily_reader, all_reader = partitioned_assets(frames, seen)
    lake = tmp_path / "lake"
    resources = {"io_manager": MeshIOManager(lake=str(lake))}
    with dg.instance_for_test() as instance:
        both = {"dagster/asset_partition_range_start": "2026-06-01", "dagster/asset_partition_range_end": "2026-06-02"}
        assert dg.materialize([producer], resources=resources, instance=instance, tags=both).success
        assert table_rows(lake)["event_id"].tolist() == [1, 2, 3, 4, 5]
        day_two_files = set(DeltaTable(str(lake / Lake.port_path("claims", "claim_events", 1))).file_uris())

        # day one again, smaller: only its rows change; day two's rows and files stay as they were
        frames["2026-06-01"] = day_events("2026-06-01", [1], kind="assessed")
        assert dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-01").success
        rows = table_rows(lake)
        assert rows["event_id"].tolist() == [1, 3, 4, 5] and rows.loc[0, "event_type"] == "assessed"
        table = DeltaTable(str(lake / Lake.port_path("claims", "claim_events", 1)))
        commit = table.history(1)[0]
        assert commit["operationParameters"]["predicate"] and table.version() == 1
        assert day_two_files and day_two_files <= set(table.file_uris()) | day_two_files
        assert table.to_pandas(filters=[("occurred_at", ">=", pd.Timestamp("2026-06-02"))])["event_id"].tolist() == [3, 4, 5]
        # one materialization per day, each naming the version that published it
        assert instance.get_latest_materialization_event(EVENTS).asset_materialization.partition == "2026-06-01"
        latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=EVENTS, asset_partitions=["2026-06-02"]), limit=5).records
        assert len(latest) == 1 and latest[0].asset_materialization.metadata[md.DELTA_VERSION].value == 0
        # the run's rows, and the rows of the whole table it left (the catalog shows the latter)
        newest = instance.get_latest_materialization_event(EVENTS).asset_materialization.metadata
        assert (newest["dagster/row_count"].value, newest[md.TABLE_ROWS].value) == (1, 4)
        assert latest[0].asset_materialization.metadata[md.TABLE_ROWS].value == 5
        # the asset page shows "Row count 1" for the run's one day: next to it, the whole table, labelled
        assert newest[md.TABLE_ROWS_LABEL].value == 4
        assert newest[md.ROW_COUNT_COVERS].value == "this run's 1 day(s) (2026-06-01): 1 row(s); the whole table holds 4 (Table rows (all days))"
        assert "2 day(s) (2026-06-01..2026-06-02): 5 row(s)" in latest[0].asset_materialization.metadata[md.ROW_COUNT_COVERS].value
        # usage counts a run's rows once, not once per day it materialized: 5 rows, then 1
        use = product_usage(instance, Lake(str(lake)), "claims", "claim_events", 0.0, DEFAULT_PRICES, 3600.0)
        assert (use.runs, use.rows_published, use.rows_latest) == (2, 6, 1)

        # a partitioned consumer reads its own day; an unpartitioned one every day
        assert dg.materialize([producer, daily_reader], resources=resources, instance=instance, selection=[daily_reader.key], partition_key="2026-06-02").success
        assert seen["2026-06-02"]["event_id"].tolist() == [3, 4, 5]
        assert dg.materialize([producer, all_reader], resources=resources, instance=instance, selection=[all_reader.key]).success
        assert sorted(seen["all"]["event_id"].tolist()) == [1, 3, 4, 5]


def test_the_rows_a_partition_publish_leaves_are_counted_from_the_log_and_the_runs_days(tmp_path):
    """What a table-level row count is judged on (rows_outside): the logged rows less those on the
    run's days, read only from the files that may hold them; the same count as the whole column."""
    from mesh_platform.storage.publishing import rows_outside

    days = {"2026-06-01": [1, 2], "2026-06-02": [3, 4, 5], "2026-06-03": [6], "2026-06-04": [7, 8, 9, 10]}
    frames = {day: day_events(day, ids) for day, ids in days.items()}
    producer, _, _ = partitioned_assets(frames, {})
    lake = tmp_path / "lake"
    resources = {"io_manager": MeshIOManager(lake=str(lake))}
    with dg.instance_for_test() as instance:
        three = {"dagster/asset_partition_range_start": "2026-06-01", "dagster/asset_partition_range_end": "2026-06-03"}
        assert dg.materialize([producer], resources=resources, instance=instance, tags=three).success  # one file, three days
        assert dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-04").success  # a file of its own
    contract = mesh_registry().get("claims.claim_events")
    on_day = table_rows(lake)["occurred_at"].dt.strftime("%Y-%m-%d")
    for keys in (["2026-06-05"], ["2026-06-02"], ["2026-06-01", "2026-06-04"], ["2026-06-03", "2026-06-04"], sorted(days)):
        assert rows_outside(Lake(str(lake)), contract, keys) == int((~on_day.isin(keys)).sum()), keys


def test_rows_outside_the_partition_and_keys_on_other_days_publish_nothing(tmp_path):
    frames = {"2026-06-01": day_events("2026-06-01", [1, 2]), "2026-06-02": day_events("2026-06-02", [3])}
    producer, _, _ = partitioned_assets(frames, {})
    lake = tmp_path / "lake"
    resources = {"io_manager": MeshIOManager(lake=str(lake))}
    with dg.instance_for_test() as instance:
        assert dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-01").success
        before = table_rows(lake)

        # a row of another day in day two's run
        frames["2026-06-02"] = pd.concat([day_events("2026-06-02", [3]), day_events("2026-06-05", [4])], ignore_index=True)
        outside = dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-02", raise_on_error=False)
        assert not outside.success
        message = failure(outside)
        assert "port claims.claim_events v1, partition 2026-06-02: 1 row(s) have a occurred_at outside the partition (days 2026-06-05)" in message
        assert "Nothing was published" in message

        # an event id that day one already holds
        frames["2026-06-02"] = day_events("2026-06-02", [2, 3])
        clash = dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-02", raise_on_error=False)
        assert not clash.success
        message = failure(clash)
        assert "partition 2026-06-02: 1 primary key(s) (event_id) already exist on other days of the table (e.g. event_id=2)" in message

        table = DeltaTable(str(lake / Lake.port_path("claims", "claim_events", 1)))
        assert table.version() == 0 and table_rows(lake).equals(before)
        assert instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=EVENTS, asset_partitions=["2026-06-02"]), limit=5).records == []

        # the same day, consistent: published
        frames["2026-06-02"] = day_events("2026-06-02", [3])
        assert dg.materialize([producer], resources=resources, instance=instance, partition_key="2026-06-02").success
        assert table_rows(lake)["event_id"].tolist() == [1, 2, 3]


def test_the_landing_sensor_requests_only_the_days_new_files_touch(tmp_path):
    from mesh_platform.sources.landing_sensor import landing_zone_sensor
    from mesh_platform.sources.systems import LandingZone

    daily = partitions.daily_definition("2026-05-01")

    @dg.asset(partitions_def=daily)
    def landed() -> None:
        return None

    job = dg.define_asset_job("claims_products", selection=[landed])
    landing = tmp_path / "landing"
    landing.mkdir()
    sensor = landing_zone_sensor(name="s", job=job, landing=LandingZone(path=str(landing)), patterns=["claims_*.csv"],
                                 days={"claims_*.csv": "reported_at"}, settle_seconds=0)
    pd.DataFrame({"claim_ref": ["a", "b", "c", "d", "f"], "reported_at": ["2026-06-01T09:00:00", "2026-06-02T10:00:00", "2026-06-05T11:00:00", "1999-01-01T00:00:00", "2026-06-20T08:00:00"]}) \
        .to_csv(landing / "claims_batch_0001.csv", index=False)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, repository_def=dg.Definitions(assets=[landed], jobs=[job]).get_repository_def())
        requests = sensor(ctx)
        spans = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests]
        # 1999 is not a partition: left out; days up to a week apart share one run, farther ones do not
        assert spans == [("2026-06-01", "2026-06-05"), ("2026-06-20", "2026-06-20")]
        assert len({r.run_key for r in requests}) == 2
        pd.DataFrame({"claim_ref": ["e"], "reported_at": ["2026-06-05T15:00:00"]}).to_csv(landing / "claims_batch_0002.csv", index=False)
        again = sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
        assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in again] == [("2026-06-05", "2026-06-05")]


def test_mesh_materialize_refuses_unknown_partitions_before_any_run(tmp_path):
    env = {"MESH_HOME": str(tmp_path / "home")}
    unknown = run_mesh(["materialize", "--in-process", "--select", "claims", "--partition", "1999-01-01"], env=env)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "partition 1999-01-01 is not a partition of it (daily partitions from 2026-05-01 to" in unknown.stderr
    reversed_range = run_mesh(["materialize", "--in-process", "--select", "claims", "--from", "2026-06-10", "--to", "2026-06-01"], env=env)
    assert reversed_range.returncode == 2 and "--from 2026-06-10 is after --to 2026-06-01" in reversed_range.stderr
    unpartitioned = run_mesh(["materialize", "--in-process", "--select", "policies", "--partition", "2026-06-01"], env=env)
    assert unpartitioned.returncode == 2 and "none of the selected assets is partitioned" in unpartitioned.stderr
    assert not (tmp_path / "home" / "dagster_home" / "history").exists() or not list((tmp_path / "home" / "dagster_home").rglob("*.db"))


NEW_DAY = "2026-12-01"  # after the simulation's last day (2026-11-30)


def land_new_day(landing: Path) -> list[str]:
    """A batch of three new claims reported on NEW_DAY, on policies the mesh knows, with their events."""
    old = pd.read_csv(sorted(landing.glob("claims_batch_*.csv"))[0], dtype=str)
    new = old.head(3).copy()
    new["claim_ref"] = [f"CLM-99{i:05d}" for i in range(3)]
    new["incident_date"] = "2026-11-29"
    new["reported_at"] = f"{NEW_DAY}T09:30:00"
    new["status"], new["settled_at"], new["amount_paid"] = "open", "", "0.0"
    new.to_csv(landing / "claims_batch_9001.csv", index=False)
    with open(landing / "claim_events_batch_9001.jsonl", "w") as fh:
        for i, ref in enumerate(new["claim_ref"]):
            fh.write(json.dumps({"claim_ref": ref, "event": "opened", "at": f"{NEW_DAY}T09:30:00", "event_no": 9_000_000 + i}) + "\n")
    return new["claim_ref"].tolist()


@pytest.mark.slow
def test_one_new_day_flows_through_claims_fraud_and_analytics_as_partition_runs(tmp_path):
    home = tmp_path / "home"
    env = {"MESH_HOME": str(home)}
    first = run_mesh(["materialize", "--in-process", "--scale", "0.3"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    lake = home / "lake"
    claims_before = DeltaTable(str(lake / Lake.port_path("claims", "claims", 1)))
    rows_before, version_before = claims_before.to_pandas().shape[0], claims_before.version()
    refs = land_new_day(home / "sources" / "claims_landing")

    day = run_mesh(["materialize", "--in-process", "--select", "claims*", "--partition", NEW_DAY], env=env)
    assert day.returncode == 0, day.stdout + day.stderr
    assert f"partitions: {NEW_DAY}" in day.stdout

    claims = DeltaTable(str(lake / Lake.port_path("claims", "claims", 1)))
    frame = claims.to_pandas()
    assert len(frame) == rows_before + 3 and set(refs) <= set(frame["claim_id"])
    assert claims.version() == version_before + 1 and "predicate" in claims.history(1)[0]["operationParameters"]
    scores = DeltaTable(str(lake / Lake.port_path("fraud", "fraud_scores", 1))).to_pandas()
    assert set(refs) <= set(scores["claim_id"]) and scores["claim_id"].is_unique
    assert len(scores) == len(frame)  # every claim scored once: the new day added, the others kept
    # the day's features read the day's claims, then their policyholders' claims of the year by
    # key: prior_claims as if the year had been read whole
    year = frame[(frame["reported_at"] >= pd.Timestamp(NEW_DAY) - pd.Timedelta(days=365)) & (frame["reported_at"] < pd.Timestamp(NEW_DAY) + pd.Timedelta(days=1))]
    year = year.sort_values(["policyholder_id", "reported_at", "claim_id"], kind="stable").assign(prior=lambda f: f.groupby("policyholder_id").cumcount())
    features = DeltaTable(str(lake / Lake.port_path("fraud", "claim_features", 2))).to_pandas().set_index("claim_id")
    assert features.loc[refs, "prior_claims"].tolist() == year.set_index("claim_id").loc[refs, "prior"].tolist()

    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        key = dg.AssetKey(["claims", "claims"])
        new_day = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[NEW_DAY]), limit=10).records
        assert len(new_day) == 2  # the whole rebuild, then the day's run
        old_day = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=["2026-06-15"]), limit=10).records
        assert len(old_day) == 1  # untouched by the day's run
        # fraud's reads of claims in the day's run: the day (one day's claims), then the year by policyholder
        fraud_run = next(r for r in instance.get_runs(limit=20) if r.tags.get(md.DOMAIN) == "fraud")
        reads = [rec.event_log_entry.asset_observation.metadata for rec in instance.fetch_observations(key, limit=100).records
                 if rec.event_log_entry.run_id == fraud_run.run_id]
        lookups = {json.dumps(m[md.LOOKUP].value, sort_keys=True): m[md.ROWS].value for m in reads if md.LOOKUP in m}
        assert lookups.pop(json.dumps({"days": [NEW_DAY, NEW_DAY]})) == 3
        (by_key, rows), = lookups.items()
        assert json.loads(by_key) == {"column": "policyholder_id", "keys": len(set(frame.set_index("claim_id").loc[refs, "policyholder_id"]))}
        assert 3 <= rows < len(frame)
        # the day's run of the analytics marts (unpartitioned, rebuilt whole) saw the new claims
        marts = [r for r in instance.get_runs(limit=20) if r.tags.get(md.DOMAIN) == "analytics"]
        assert marts and marts[0].tags.get("dagster/asset_partition_range_start") is None

    # a day without claims through every domain: empty partitions, nothing fails (fraud_scores
    # used to: scikit-learn refuses to score an empty batch)
    quiet = "2026-05-02"  # a partition long before the first simulated claim
    day = run_mesh(["materialize", "--in-process", "--select", "claims*", "--partition", quiet], env=env)
    assert day.returncode == 0, day.stdout + day.stderr
    assert "fraud: ok" in day.stdout and "analytics: ok" in day.stdout
    assert len(DeltaTable(str(lake / Lake.port_path("fraud", "fraud_scores", 1))).to_pandas()) == len(scores)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        for product in (("fraud", "claim_features"), ("fraud", "fraud_scores")):
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(list(product)), asset_partitions=[quiet]), limit=1).records
            assert records and records[0].asset_materialization.metadata["dagster/row_count"].value == 0, product


@pytest.fixture(scope="module")
def claims_home(tmp_path_factory):
    """policies and claims materialized whole (every day) in a home of their own."""
    home = tmp_path_factory.mktemp("claims_home") / "home"
    env = {"MESH_HOME": str(home)}
    first = run_mesh(["materialize", "--in-process", "--scale", "0.3", "--select", "policies,claims"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    return home, env


TICK = """
import datetime as dt, importlib, json, sys
import dagster as dg
defs = importlib.import_module("domains.claims.definitions").defs
schedule = defs.resolve_schedule_def("claims_sla_schedule")
job = defs.resolve_implicit_global_asset_job_def()
keys = [k for k in job.asset_layer.asset_graph.get_all_asset_keys() if k.path[0] == "claims" and job.asset_layer.asset_graph.get(k).is_materializable]
with dg.DagsterInstance.get() as instance:
    busy = None
    if sys.argv[2:] == ["busy"]:  # a run of claims already running (a landing batch, say)
        busy = instance.create_run_for_job(job, tags={"mesh/domain": "claims"}, asset_selection=frozenset(keys), status=dg.DagsterRunStatus.STARTED)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime.fromisoformat(sys.argv[1])) as context:
        tick = schedule.evaluate_tick(context)
    if busy is not None:  # it never ends: gone, so that later ticks over this home do not see it
        instance.delete_run(busy.run_id)
    if not tick.run_requests:
        print(json.dumps({"skipped": tick.skip_message}))
        sys.exit(0)
    request = tick.run_requests[0]
    result = job.execute_in_process(instance=instance, asset_selection=keys, tags=request.tags, raise_on_error=False)
print(json.dumps({"tags": request.tags, "success": result.success,
                  "errors": [str(e.event_specific_data.error.message)[:300] for e in result.get_step_failure_events()]}))
"""


def test_an_sla_tick_of_a_partitioned_domain_runs_the_days_since_the_previous_tick(claims_home):
    """Every tick used to fail: "Cannot access partition_key for a non-partitioned run"."""
    import subprocess
    import sys

    home, env = claims_home
    full_env = {**__import__("os").environ, **env, "DAGSTER_HOME": str(home / "dagster_home"), "MESH_LAKE": str(home / "lake"),
                "MESH_SOURCES": str(home / "sources")}
    result = subprocess.run([sys.executable, "-c", TICK, "2026-11-21T00:00:00+00:00"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["tags"]["dagster/asset_partition_range_start"] == "2026-11-20"  # the previous hour's day
    assert outcome["tags"]["dagster/asset_partition_range_end"] == "2026-11-21"
    assert outcome["success"], outcome["errors"]


def test_an_sla_tick_skips_while_a_run_of_its_domain_is_in_flight(claims_home):
    """The run in flight refreshes the same products: a tick beside it would race it for the same ports."""
    import subprocess
    import sys

    home, env = claims_home
    full_env = {**__import__("os").environ, **env, "DAGSTER_HOME": str(home / "dagster_home"), "MESH_LAKE": str(home / "lake"),
                "MESH_SOURCES": str(home / "sources")}
    result = subprocess.run([sys.executable, "-c", TICK, "2026-11-21T05:00:00+00:00", "busy"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"skipped": "1 run(s) of claims in flight; they refresh its products"}


def test_an_sla_tick_skips_when_every_product_was_published_since_the_previous_tick(claims_home):
    """A landing batch refreshed claims within the hour: the hourly SLA is met, and a tick would
    rebuild the same days from the same files (one redundant run a day in the freshness benchmark)."""
    import datetime as dt
    import subprocess
    import sys

    home, env = claims_home
    full_env = {**__import__("os").environ, **env, "DAGSTER_HOME": str(home / "dagster_home"), "MESH_LAKE": str(home / "lake"),
                "MESH_SOURCES": str(home / "sources")}
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        published = [instance.get_latest_materialization_event(dg.AssetKey(["claims", name])).timestamp for name in ("claims", "claim_events")]
    tick = dt.datetime.fromtimestamp(max(published), tz=dt.timezone.utc) + dt.timedelta(minutes=1)
    assert tick - dt.datetime.fromtimestamp(min(published), tz=dt.timezone.utc) < dt.timedelta(minutes=50)
    result = subprocess.run([sys.executable, "-c", TICK, tick.isoformat()], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["skipped"].startswith("every product of claims was published since "), outcome
    assert outcome["skipped"].endswith("within its 1 h refresh SLA")


def test_a_day_without_claims_publishes_an_empty_partition(claims_home):
    """rowCount > 0 is a rule about the table: judged on the table with the day applied, not on the day alone."""
    home, env = claims_home
    lake = home / "lake"
    before = DeltaTable(str(lake / Lake.port_path("claims", "claims", 1))).to_pandas()
    quiet = "2026-05-02"  # a partition long before the first simulated claim
    assert not (pd.to_datetime(before["reported_at"]).dt.strftime("%Y-%m-%d") == quiet).any()
    day = run_mesh(["materialize", "--in-process", "--select", "claims", "--partition", quiet], env=env)
    assert day.returncode == 0, day.stdout + day.stderr
    after = DeltaTable(str(lake / Lake.port_path("claims", "claims", 1)))
    assert len(after.to_pandas()) == len(before)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        key = dg.AssetKey(["claims", "claims"])
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[quiet]), limit=5).records
        assert len(records) == 2  # the whole rebuild, then the quiet day's own run
        assert records[0].asset_materialization.metadata["dagster/row_count"].value == 0


@pytest.mark.parametrize("other_days, fails", [(["2026-06-05"], False), (["2026-06-02"], True)])
def test_a_publish_followed_at_once_by_one_over_other_days_stands(tmp_path, monkeypatch, other_days, fails):
    """Two runs over different days of one port commit one after the other. The earlier one used to
    fail after its commit ("another publish committed version N right after this one's") although
    the later one replaced other days only: the landing sensor's run and automation's run over
    other days, in the production stack. A later commit over the same days still fails it."""
    from mesh_platform.contracts.enforcement import conform
    from mesh_platform.storage import delta, publishing

    contract = mesh_registry().get("claims.claim_events")
    lake = Lake(str(tmp_path / "lake"))
    publishing.publish(lake, contract, conform(day_events("2026-06-01", [1]), contract), ["2026-06-01"])
    real, raced = delta.current_version, []

    def racing(*args):  # the other run commits between this run's commit and its last look at the table
        if not raced:
            raced.append(True)
            rows = day_events(other_days[0], [7 if fails else 9])
            publishing.publish(lake, contract, conform(rows, contract), other_days)
        return real(*args)

    monkeypatch.setattr(delta, "current_version", racing)
    mine = conform(day_events("2026-06-02", [2, 3]), contract)
    if fails:
        with pytest.raises(delta.ConcurrentPublish, match="right after this one's"):
            publishing.publish(lake, contract, mine, ["2026-06-02", "2026-06-03"])
    else:
        written = publishing.publish(lake, contract, mine, ["2026-06-02", "2026-06-03"])
        assert written[0][1].version == 1  # its own commit; its days are as it wrote them in version 2 too
        assert sorted(table_rows(tmp_path / "lake")["event_id"]) == [1, 2, 3, 9]


@pytest.mark.parametrize("unit", ["s", "us", "ns", "tz", "date"])
def test_day_masks_follow_the_day_boundaries_of_every_column_type(unit):
    """Partition checks and key uniqueness decide a row's day by comparing its value with the days'
    bounds: the first and last instant of a day are on it, the next midnight is not, a null is on no day."""
    import datetime as dt

    import pyarrow as pa

    from mesh_platform.products.partitions import on_days

    values = [dt.datetime(2026, 8, 30, 23, 59, 59), dt.datetime(2026, 8, 31), dt.datetime(2026, 8, 31, 23, 59, 59),
              dt.datetime(2026, 9, 1), None, dt.datetime(2026, 9, 3, 5)]
    types = {"s": pa.timestamp("s"), "us": pa.timestamp("us"), "ns": pa.timestamp("ns"), "tz": pa.timestamp("us", tz="UTC"), "date": pa.date32()}
    if unit == "date":
        values = [v.date() if v else None for v in values]
    column = pa.chunked_array([pa.array(values[:3], types[unit]), pa.array(values[3:], types[unit])])
    assert on_days(column, ["2026-08-31", "2026-09-03"]).to_pylist() == [False, True, True, False, False, True]
    assert on_days(column, []).to_pylist() == [False] * 6
