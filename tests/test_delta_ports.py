"""Output ports as Delta tables (mesh_platform.storage.delta), exercised through Dagster materializations.

- a publish is one commit per variant; the masked variant a sibling table; readers read the version
  the latest materialization recorded (a masked reader the masked version of the same publish);
- failed (injected) and killed (SIGKILL) publishes leave the previous version;
- reads record their version in the audit log, and a run tagged ``mesh/replay_of`` reads what an
  earlier run read;
- two runs in two real processes race to publish one product, on disk and on moto S3
  (If-None-Match commits): one commits, the other fails naming the port, and the latest
  materialization names the current version;
- retention from the contract, the platform's maintenance job, bytes kept with history;
- damaged ``_delta_log``s fail reads naming the port;
- the outside-reader recipes of docs/io.md.

The masked variant uses the demo mesh's grants after policies withdraws customer_care's unmasking
of pii on policyholders (customer_care then reads the masked table).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from conftest import ROOT
from deltalake import DeltaTable

from mesh_platform.foundations import metadata as md
from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.storage import delta
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake

GRANT_WITHDRAWN = "    unmasked: [pii]\n"
HOLDERS = dg.AssetKey(["policies", "policyholders"])


def holders(n: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policyholder_id": [f"PH-{i:07d}" for i in range(n)],
            "full_name": [f"Person {tag}{i}" for i in range(n)],
            "email": [f"p{i}@{tag}.example" for i in range(n)],
            "phone": [f"+44 7700 9{i:05d}" for i in range(n)],
            "date_of_birth": pd.to_datetime(["1980-01-01"] * n).date,
            "city": [f"City {tag}"] * n,
            "postcode_district": ["LS1"] * n,
            "customer_since": pd.to_datetime(["2020-01-01"] * n),
        }
    )


@pytest.fixture
def masked_mesh(tmp_path, monkeypatch):
    """customer_care reads policyholders masked (grants copied, its unmasking withdrawn)."""
    domains = tmp_path / "domains"
    shutil.copytree(ROOT / "domains", domains, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    grants = domains / "policies" / "grants.yaml"
    grants.write_text(grants.read_text().replace(GRANT_WITHDRAWN, ""))
    monkeypatch.setenv("MESH_DOMAINS", str(domains))
    return tmp_path / "lake"


def assets(state: dict, seen: dict):
    contract = mesh_registry().get("policies.policyholders")

    @dg.asset(key=HOLDERS, metadata={md.CONTRACT_ID: contract.id})
    def policyholders():
        return state["df"]

    @dg.asset(key=["customer_care", "reader"], ins={"ph": dg.AssetIn(key=HOLDERS, metadata={md.CONTRACT_ID: contract.id, md.CONSUMER_COLUMNS: ["policyholder_id", "email", "city"]})})
    def reader(ph):
        seen["frame"] = ph
        return None

    return policyholders, reader


def materialization(instance, key=HOLDERS):
    return instance.get_latest_materialization_event(key).asset_materialization.metadata


def reads(instance, run_id: str) -> list[dict]:
    records = instance.fetch_observations(HOLDERS, limit=100).records
    return [r.event_log_entry.asset_observation.metadata for r in records if r.event_log_entry.run_id == run_id]


def test_a_publish_commits_each_variant_once_and_a_masked_reader_reads_the_paired_version(masked_mesh):
    state, seen = {"df": holders(3, "a")}, {}
    producer, reader = assets(state, seen)
    resources = {"io_manager": MeshIOManager(lake=str(masked_mesh), home=str(masked_mesh.parent / "home"))}
    full, masked = masked_mesh / "policies/policyholders/v1", masked_mesh / "policies/policyholders/v1_masked"
    with dg.instance_for_test() as instance:
        for n, tag in enumerate("ab"):
            state["df"] = holders(3, tag)
            assert dg.materialize([producer], resources=resources, instance=instance).success
            meta = materialization(instance)
            assert meta[md.DELTA_VERSION].value == n and meta[md.MASKED_VERSION].value == n
            assert meta["dagster/uri"].value == f"file://{full}"
            assert meta[md.STORED_BYTES].value == delta.size(Lake(str(masked_mesh)), "policies/policyholders/v1") + delta.size(Lake(str(masked_mesh)), "policies/policyholders/v1_masked")
        assert DeltaTable(str(full)).version() == 1 and DeltaTable(str(masked)).version() == 1
        assert DeltaTable(str(full)).to_pandas()["email"].tolist() == [f"p{i}@b.example" for i in range(3)]
        assert not any("@" in str(v) for v in DeltaTable(str(masked)).to_pandas()["email"])  # pseudonymized at rest
        assert DeltaTable(str(masked)).history(1)[0]["mesh.full_version"] == "1"  # each masked commit names its full one
        # the masked table is a sibling: nothing of it lives inside the full table's folder
        assert not any("masked" in p.name for p in full.rglob("*"))

        # a masked commit no materialization names (another publish, half done) is not what readers get
        stray = holders(3, "stray").assign(email=["stray"] * 3)
        lake = Lake(str(masked_mesh))
        delta.write(lake, "policies/policyholders/v1_masked", pa.Table.from_pandas(stray, preserve_index=False), "x", delta.snapshot(lake, "policies/policyholders/v1_masked", "x"))
        result = dg.materialize([producer, reader], resources=resources, instance=instance, selection=[reader.key])
        assert result.success
        assert seen["frame"]["city"].tolist() == ["City b"] * 3 and "stray" not in seen["frame"]["email"].tolist()
        [read] = reads(instance, result.run_id)
        assert read[md.AUDIT].value == "read" and read[md.PORT].value == "v1/masked" and read[md.DELTA_VERSION].value == 1


def test_a_failed_masked_commit_leaves_both_variants_at_the_previous_publish(masked_mesh, monkeypatch):
    state, seen = {"df": holders(2, "a")}, {}
    producer, _ = assets(state, seen)
    resources = {"io_manager": MeshIOManager(lake=str(masked_mesh), home=str(masked_mesh.parent / "home"))}
    full = str(masked_mesh / "policies/policyholders/v1")
    with dg.instance_for_test() as instance:
        assert dg.materialize([producer], resources=resources, instance=instance).success
        real = delta.write

        def masked_commit_fails(lake, relpath, *args, **kwargs):
            if relpath.endswith("_masked"):
                raise OSError("connection reset while committing (injected)")
            return real(lake, relpath, *args, **kwargs)

        monkeypatch.setattr(delta, "write", masked_commit_fails)
        state["df"] = holders(2, "b")
        result = dg.materialize([producer], resources=resources, instance=instance, raise_on_error=False)
        assert not result.success
        assert "injected" in result.get_step_failure_events()[0].step_failure_data.error.to_string()
        monkeypatch.undo()
        assert materialization(instance)[md.DELTA_VERSION].value == 0  # the failed publish recorded nothing
        assert DeltaTable(full).to_pandas()["city"].tolist() == ["City a"] * 2  # the full commit was taken back
        assert DeltaTable(str(masked_mesh / "policies/policyholders/v1_masked")).version() == 0


def test_a_killed_publish_leaves_the_table_at_its_previous_version(tmp_path):
    lake = Lake(str(tmp_path))
    delta.write(lake, "d/p/v1", pa.table({"id": [1, 2], "value": [1, 1]}), "d.p v1", None)
    script = textwrap.dedent(
        f"""
        import pyarrow as pa
        from mesh_platform.storage import delta
        from mesh_platform.storage.lake import Lake
        lake = Lake({str(tmp_path)!r})
        n = 6_000_000
        big = pa.table({{"id": pa.array(range(n)), "value": pa.array([2] * n)}})
        print("writing", flush=True)
        delta.write(lake, "d/p/v1", big, "d.p v1", delta.snapshot(lake, "d/p/v1", "d.p v1"))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == b"writing"
        before = set((tmp_path / "d/p/v1").iterdir())
        for _ in range(400):  # bounded: 20 s; kill as soon as the write put anything on disk
            if set((tmp_path / "d/p/v1").iterdir()) != before or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    table = DeltaTable(str(tmp_path / "d/p/v1"))
    assert table.version() == 0 and table.to_pandas()["value"].tolist() == [1, 1]


EVENTS = dg.AssetKey(["claims", "claim_events"])


def events(n: int, kind: str) -> pd.DataFrame:
    return pd.DataFrame({"event_id": list(range(n)), "claim_id": [f"C{i}" for i in range(n)], "event_type": [kind] * n, "occurred_at": pd.to_datetime(["2025-01-01"] * n)})


def event_assets(state: dict, seen: list):
    contract = mesh_registry().get("claims.claim_events")

    @dg.asset(key=EVENTS, metadata={md.CONTRACT_ID: contract.id})
    def claim_events():
        return state["df"]

    @dg.asset(key=["fraud", "watcher"], ins={"ev": dg.AssetIn(key=EVENTS, metadata={md.CONTRACT_ID: contract.id, md.CONSUMER_COLUMNS: ["event_id", "event_type"]})})
    def watcher(ev):
        seen.append(ev)
        return None

    return claim_events, watcher


def read_versions(instance, run_id: str, key=EVENTS) -> list[int]:
    records = instance.fetch_observations(key, limit=100).records
    return [r.event_log_entry.asset_observation.metadata[md.DELTA_VERSION].value for r in records if r.event_log_entry.run_id == run_id]


def test_reads_record_their_version_and_a_run_replays_the_versions_an_earlier_run_read(tmp_path):
    from mesh_platform.governance.audit import audit_records

    state, seen = {"df": events(2, "opened")}, []
    producer, watcher = event_assets(state, seen)
    resources = {"io_manager": MeshIOManager(lake=str(tmp_path / "lake"))}
    with dg.instance_for_test() as instance:
        assert dg.materialize([producer], resources=resources, instance=instance).success
        first = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key])
        assert read_versions(instance, first.run_id) == [0]
        state["df"] = events(3, "paid")
        assert dg.materialize([producer], resources=resources, instance=instance).success
        assert materialization(instance, EVENTS)[md.DELTA_VERSION].value == 1
        latest = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key])
        assert read_versions(instance, latest.run_id) == [1] and seen[-1]["event_type"].tolist() == ["paid"] * 3

        replay = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key], tags={md.REPLAY_OF: first.run_id})
        assert replay.success
        assert seen[-1]["event_type"].tolist() == ["opened"] * 2  # what the first run read, not the latest
        assert read_versions(instance, replay.run_id) == [0]

        # the audit log (what `mesh audit` prints) shows the versions published and read
        records = audit_records(instance, [EVENTS])
        assert [(r.kind, r.version) for r in records] == [("publish", 0), ("read", 0), ("publish", 1), ("read", 1), ("read", 0)]

        # a run that read nothing of the port cannot be replayed against it: a clear failure, no guess
        nothing = dg.materialize([producer], resources=resources, instance=instance)
        refused = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key], tags={md.REPLAY_OF: nothing.run_id}, raise_on_error=False)
        assert not refused.success
        message = refused.get_step_failure_events()[0].step_failure_data.error.to_string()
        assert f"cannot replay run {nothing.run_id!r}: it recorded no versioned read of claims/claim_events" in message


# A run in its own process: it publishes claims.claim_events with `rows` rows, its commit held back
# (after the publish took its snapshot) until every racer is ready, so the publishes overlap for sure.
RACER = """
import json, os, sys, time
import dagster as dg
import pandas as pd
from domains.claims.definitions import defs  # noqa: F401 - loads the contracts
from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.storage import delta
from mesh_platform.storage.io_manager import MeshIOManager

lake, barrier, rows, parties = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
real = delta.write

def write_together(*args, **kwargs):
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    for _ in range(600):  # bounded: 60 s
        if len(os.listdir(barrier)) >= parties:
            break
        time.sleep(0.1)
    return real(*args, **kwargs)

delta.write = write_together
contract = mesh_registry().get("claims.claim_events")

@dg.asset(key=["claims", "claim_events"], metadata={"mesh/contract_id": contract.id})
def claim_events():
    return pd.DataFrame({"event_id": range(rows), "claim_id": [f"C{i}" for i in range(rows)], "event_type": ["opened"] * rows,
                         "occurred_at": pd.to_datetime(["2025-01-01"] * rows)})

result = dg.materialize([claim_events], resources={"io_manager": MeshIOManager(lake=lake)}, instance=dg.DagsterInstance.get(), raise_on_error=False)
error = "" if result.success else result.get_step_failure_events()[0].step_failure_data.error.to_string()
print(json.dumps({"run_id": result.run_id, "success": result.success, "rows": rows, "error": error}))
"""


def race(lake: str, sizes: list[int], tmp_path: Path) -> tuple:
    """Publish concurrently from one process per size (real processes, one Dagster instance of their
    own); returns what each run reported and the latest materialization of the port."""
    import json
    import os

    barrier = tmp_path / f"barrier-{time.time_ns()}"
    barrier.mkdir()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # the instance's storage exists before the racers open it
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, lake, str(barrier), str(n), str(len(sizes))], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(home)})
        for n in sizes
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return out, instance.get_latest_materialization_event(EVENTS)


def _check_race(results: list[dict], table: DeltaTable, latest) -> None:
    assert sorted(r["success"] for r in results) == [False, True], results
    loser = next(r for r in results if not r["success"])
    winner = next(r for r in results if r["success"])
    assert "port claims.claim_events v1: another publish committed version 1" in loser["error"] and "committed nothing" in loser["error"]
    assert latest.run_id == winner["run_id"]
    meta = latest.asset_materialization.metadata
    assert table.version() == meta[md.DELTA_VERSION].value == 1  # the materialization names the current version
    assert len(table.to_pandas()) == meta["dagster/row_count"].value == winner["rows"]  # and its rows


def test_two_concurrent_runs_publish_one_after_the_other_or_not_at_all(tmp_path):
    """Two runs in two processes publish one product at once: one commits, the other fails naming the
    port, and the latest materialization names the version current in the lake, with its row count."""
    lake = str(tmp_path / "lake")
    delta.write(Lake(lake), "claims/claim_events/v1", pa.Table.from_pandas(events(10, "opened"), preserve_index=False), "x", None)
    results, latest = race(lake, [1500, 3000], tmp_path)
    _check_race(results, DeltaTable(str(tmp_path / "lake/claims/claim_events/v1")), latest)


def test_s3_commits_are_put_if_absent_so_two_concurrent_runs_cannot_both_commit(s3_server, s3_lake, tmp_path):
    """On S3 (moto, which honours If-None-Match like S3 does): the same race, the same outcome."""
    from botocore.exceptions import ClientError

    client = s3_server.client()
    bucket = s3_lake.split("/")[2]
    client.put_object(Bucket=bucket, Key="probe", Body=b"1")
    with pytest.raises(ClientError, match="PreconditionFailed"):  # the server refuses to overwrite: commits are safe
        client.put_object(Bucket=bucket, Key="probe", Body=b"2", IfNoneMatch="*")
    assert delta.storage_options(Lake(s3_lake))["conditional_put"] == "etag"

    delta.write(Lake(s3_lake), "claims/claim_events/v1", pa.Table.from_pandas(events(10, "opened"), preserve_index=False), "x", None)
    results, latest = race(s3_lake, [1500, 3000], tmp_path)
    table = DeltaTable(f"{s3_lake}/claims/claim_events/v1", storage_options=delta.storage_options(Lake(s3_lake)))
    _check_race(results, table, latest)


@pytest.mark.parametrize(
    "value, field, message",
    [
        ({"versions": 0}, "customProperties[retention].value.versions", "at least 1"),
        ({"versions": "ten"}, "customProperties[retention].value.versions", "whole number"),
        ({"days": -1}, "customProperties[retention].value.days", "positive number of days"),
        ({"version": 3}, "customProperties[retention].value.version", "unknown retention setting"),
        (10, "customProperties[retention].value", "must be a mapping"),
    ],
)
def test_a_malformed_retention_fails_at_contract_load_naming_file_and_field(tmp_path, value, field, message):
    import yaml

    from mesh_platform.contracts.loader import ContractError, load_contract

    raw = yaml.safe_load((ROOT / "domains/claims/contracts/claims.yaml").read_text())
    raw["customProperties"] = [*raw.get("customProperties", []), {"property": "retention", "value": value}]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ContractError) as exc:
        load_contract(path)
    problem = exc.value.problems[0]
    assert problem.file.endswith("claims.yaml") and problem.field == field and message in problem.message


def test_each_domain_gets_a_maintenance_job_and_schedule_from_the_platform():
    from domains.claims.definitions import defs

    job = defs.resolve_job_def("claims_lake_maintenance")
    schedule = defs.resolve_schedule_def("claims_lake_maintenance_daily")
    assert schedule.job_name == job.name and schedule.cron_schedule == "30 3 * * *"
    assert job.tags["mesh/domain"] == "claims"


def test_maintenance_vacuums_by_the_contracts_retention_and_reports_bytes_kept(tmp_path):
    """Through Dagster: publishes, then the domain's maintenance job; old versions' files go, history
    bytes are reported, the current version does not move, a replay of a vacuumed version fails clearly."""
    from mesh_platform.contracts.model import CustomProperty
    from mesh_platform.governance.quotas import storage_used
    from mesh_platform.storage.retention import maintenance_job, retention_of

    contract = mesh_registry().get("claims.claim_events")
    kept = contract.model_copy(update={"custom_properties": [*contract.custom_properties, CustomProperty(property="retention", value={"versions": 2})]})
    assert retention_of(kept).versions == 2 and retention_of(contract).versions == 10  # the default
    state, seen = {"df": events(50, "opened")}, []
    producer, watcher = event_assets(state, seen)
    lake_root = str(tmp_path / "lake")
    resources = {"io_manager": MeshIOManager(lake=lake_root)}
    lake, path = Lake(lake_root), "claims/claim_events/v1"
    with dg.instance_for_test() as instance:
        assert dg.materialize([producer], resources=resources, instance=instance).success
        first_read = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key])
        sizes = []
        for n in range(1, 5):
            state["df"] = events(50 + n, "paid")
            assert dg.materialize([producer], resources=resources, instance=instance).success
            sizes.append(materialization(instance, EVENTS)[md.STORED_BYTES].value)
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # history grows with every version
        # the domain's storage quota counts every kept version, not only the current one
        assert storage_used(lake, "claims") == delta.size(lake, path) == sizes[-1] > delta.version_bytes(lake, path, 4) * 4

        result = maintenance_job("claims", {"claim_events": kept}, lake_root).execute_in_process(instance=instance)
        assert result.success
        [observed] = [r.event_log_entry.asset_observation.metadata for r in instance.fetch_observations(EVENTS, limit=100).records
                      if r.event_log_entry.run_id == result.run_id]
        assert observed[md.AUDIT].value == "vacuum" and observed[md.VACUUMED_FILES].value == 3  # versions 0-2
        assert observed[md.STORED_BYTES].value == delta.size(lake, path) == storage_used(lake, "claims") < sizes[-1]
        assert DeltaTable(str(tmp_path / "lake" / path)).version() == 4  # a vacuum never moves the current version
        assert len(delta.read(lake, path, "p", version=3)[0]) == 53 and len(delta.read(lake, path, "p", version=4)[0]) == 54
        with pytest.raises(delta.VersionNotKept, match="version 0 is no longer kept"):
            delta.read(lake, path, "claims.claim_events v1", version=0)
        replay = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key], tags={md.REPLAY_OF: first_read.run_id}, raise_on_error=False)
        assert not replay.success
        assert "claims.claim_events v1: version 0 is no longer kept" in replay.get_step_failure_events()[0].step_failure_data.error.to_string()

        # a second run has nothing left to do
        again = maintenance_job("claims", {"claim_events": kept}, lake_root).execute_in_process(instance=instance)
        assert again.success and delta.size(lake, path) == observed[md.STORED_BYTES].value


def _damage(log: Path, how: str) -> None:
    latest = sorted(log.glob("*.json"))[-1]
    if how == "log removed":
        shutil.rmtree(log)
    elif how == "latest commit deleted":
        latest.unlink()
    elif how == "latest commit emptied":
        latest.write_text("")
    elif how == "latest commit garbled":
        latest.write_text("{not json")
    elif how == "a data file dropped from the commit":
        latest.write_text("\n".join(line for line in latest.read_text().splitlines() if '"add"' not in line) + "\n")
    elif how == "middle commit deleted":
        sorted(log.glob("*.json"))[1].unlink()


@pytest.mark.parametrize("how", ["log removed", "latest commit deleted", "latest commit emptied", "latest commit garbled", "a data file dropped from the commit", "middle commit deleted"])
def test_a_damaged_delta_log_fails_the_read_naming_the_port_and_serves_nothing(tmp_path, how):
    state, seen = {"df": events(2, "opened")}, []
    producer, watcher = event_assets(state, seen)
    resources = {"io_manager": MeshIOManager(lake=str(tmp_path / "lake"))}
    with dg.instance_for_test() as instance:
        for n in range(3):
            state["df"] = events(2 + n, "opened")
            assert dg.materialize([producer], resources=resources, instance=instance).success
        _damage(tmp_path / "lake/claims/claim_events/v1/_delta_log", how)
        result = dg.materialize([producer, watcher], resources=resources, instance=instance, selection=[watcher.key], raise_on_error=False)
        assert not result.success and seen == []  # the consumer never ran on wrong data
        message = result.get_step_failure_events()[0].step_failure_data.error.to_string()
        assert "port claims.claim_events v1: the Delta log at" in message and "is damaged or missing" in message, message
        if how in ("log removed", "latest commit garbled"):  # a publish does not paper over it either
            again = dg.materialize([producer], resources=resources, instance=instance, raise_on_error=False)
            assert not again.success
            assert "port claims.claim_events v1: the Delta log at" in again.get_step_failure_events()[0].step_failure_data.error.to_string()


def test_the_documented_outside_reads_read_a_port_at_a_version(tmp_path):
    """docs/io.md, "Reading a port outside the mesh": pandas and DuckDB at a version, not the folder's files."""
    import duckdb

    lake = Lake(str(tmp_path))
    for n in (2, 3):
        delta.write(lake, "claims/claims/v1", pa.table({"status": ["open"] * n}), "claims.claims v1", delta.snapshot(lake, "claims/claims/v1", "claims.claims v1"))
    path = str(tmp_path / "claims/claims/v1")
    assert len(DeltaTable(path, version=0).to_pandas(columns=["status"])) == 2
    assert [h["version"] for h in DeltaTable(path).history(5)] == [1, 0]
    claims = DeltaTable(path, version=0).to_pyarrow_dataset()  # noqa: F841 - read by name below
    assert duckdb.sql("SELECT status, count(*) FROM claims GROUP BY 1").fetchall() == [("open", 2)]
    # the folder's files are every version's: reading them directly would mix publishes
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}/*.parquet')").fetchall() == [(5,)]


@pytest.mark.parametrize("passes", [False, True])
def test_a_commit_gate_lets_the_write_run_and_holds_only_the_commit(tmp_path, passes):
    """The data is handed to delta-rs while the check still runs; the commit waits for the check,
    and a failed check ends the write without one (the previous version stays, readable)."""
    import threading

    from mesh_platform.storage.gate import CommitGate

    lake = Lake(str(tmp_path))
    delta.write(lake, "d/p/v1", pa.table({"id": [1, 2], "value": [1, 1]}), "d.p v1", None)
    rows = 300_000  # several batches
    table = pa.table({"id": pa.array(range(rows)), "value": pa.array([i % 7 for i in range(rows)])})
    release = threading.Event()

    def check():
        assert release.wait(timeout=60), "the test never released the check"
        if not passes:
            raise ValueError("2 duplicate key(s) (injected)")
        return "checked"

    gate = CommitGate(check, "test")
    outcome: dict = {}

    def publish():
        try:
            outcome["version"] = delta.write(lake, "d/p/v1", table, "d.p v1", delta.snapshot(lake, "d/p/v1", "d.p v1"), gate=gate)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    writer = threading.Thread(target=publish)
    writer.start()
    try:
        assert gate.waited.wait(timeout=60)  # delta-rs took every batch while the check was still running
        time.sleep(0.2)
        assert writer.is_alive() and delta.current_version(lake, "d/p/v1", "d.p v1") == 0  # ... and holds its commit
    finally:
        release.set()
        writer.join(timeout=60)
    assert not writer.is_alive()
    if passes:
        assert outcome == {"version": 1} and delta.read(lake, "d/p/v1", "d.p v1")[0].num_rows == rows
    else:
        assert isinstance(outcome.get("error"), ValueError) and "injected" in str(outcome["error"])  # the check's own error
        back, version = delta.read(lake, "d/p/v1", "d.p v1")
        assert version == 0 and back.column("id").to_pylist() == [1, 2]


def test_a_duplicate_key_checked_while_the_write_runs_commits_to_neither_variant(masked_mesh, monkeypatch):
    """A port published from a plain asset (conform in the IO manager): its key check overlaps the
    write; a duplicate key fails the run naming the key, and both variants keep their version."""
    from mesh_platform.storage import gate

    monkeypatch.setattr(gate, "OVERLAP_MIN_ROWS", 1)
    state, seen = {"df": holders(3, "a")}, {}
    producer, _ = assets(state, seen)
    resources = {"io_manager": MeshIOManager(lake=str(masked_mesh), home=str(masked_mesh.parent / "home"))}
    full, masked = masked_mesh / "policies/policyholders/v1", masked_mesh / "policies/policyholders/v1_masked"
    with dg.instance_for_test() as instance:
        assert dg.materialize([producer], resources=resources, instance=instance).success
        state["df"] = holders(3, "b").assign(policyholder_id=["PH-1", "PH-2", "PH-1"])
        result = dg.materialize([producer], resources=resources, instance=instance, raise_on_error=False)
        assert not result.success
        error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
        assert "ContractViolation" in error and "policyholder_id" in error and "primaryKey: 1 duplicate key(s)" in error and "'PH-1'" in error
        assert materialization(instance)[md.DELTA_VERSION].value == 0  # nothing recorded
        assert DeltaTable(str(full)).version() == 0 and DeltaTable(str(masked)).version() == 0  # nothing committed
        assert DeltaTable(str(full)).to_pandas()["city"].tolist() == ["City a"] * 3
