"""Publishing IO: atomic publish, failure injection, column pruning, intermediates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake

ROOT = Path(__file__).resolve().parents[1]


def table(n: int, value: int = 0) -> pa.Table:
    return pa.table({"id": list(range(n)), "value": [value] * n, "text": ["x" * 20] * n})


def test_publish_and_read_roundtrip(tmp_path):
    lake = Lake(str(tmp_path))
    published = lake.write_table("d/p/v1/data.parquet", table(10))
    assert published.uri == f"file://{tmp_path}/d/p/v1/data.parquet"
    assert published.rows == 10 and published.bytes == (tmp_path / "d/p/v1/data.parquet").stat().st_size
    assert lake.read_table("d/p/v1/data.parquet", columns=["value"]).column_names == ["value"]
    assert os.listdir(tmp_path / "d/p/v1") == ["data.parquet"]  # no staging files left behind


def test_failure_mid_write_keeps_last_good_version(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    lake.write_table("d/p/v1/data.parquet", table(100, value=1))

    def explode_halfway(tbl, sink, **kwargs):
        sink.write(b"PAR1" + b"\0" * 4096)  # a partial file
        raise OSError("disk full (injected)")

    monkeypatch.setattr(pq, "write_table", explode_halfway)
    with pytest.raises(OSError, match="injected"):
        lake.write_table("d/p/v1/data.parquet", table(200, value=2))
    monkeypatch.undo()
    survivor = lake.read_table("d/p/v1/data.parquet")
    assert survivor.num_rows == 100 and set(survivor.column("value").to_pylist()) == {1}
    assert os.listdir(tmp_path / "d/p/v1") == ["data.parquet"]


def test_killed_writer_keeps_last_good_version(tmp_path):
    """SIGKILL a process in the middle of a large publish: readers still see the old version."""
    lake = Lake(str(tmp_path))
    lake.write_table("d/p/v1/data.parquet", table(100, value=1))
    script = textwrap.dedent(
        f"""
        import pyarrow as pa, pyarrow.parquet as pq, sys
        from mesh_platform.storage.lake import Lake
        real = pq.write_table
        def slow(tbl, sink, **kw):
            sink.write(b"PAR1partial")
            sink.flush()
            print("writing", flush=True)
            import time; time.sleep(60)
        pq.write_table = slow
        Lake({str(tmp_path)!r}).write_table("d/p/v1/data.parquet", pa.table({{"id": [1]}}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    survivor = lake.read_table("d/p/v1/data.parquet")
    assert survivor.num_rows == 100
    leftovers = [f for f in os.listdir(tmp_path / "d/p/v1") if f != "data.parquet"]
    assert leftovers and all(f.endswith(".staging") for f in leftovers)  # never visible under the port's name
    # the next publish removes the killed writer's debris, and leaves a live writer's staging file alone
    live = tmp_path / "d/p/v1" / f".data.parquet.{leftovers[0].split('.')[-4]}.{os.getpid()}.feedbeef.staging"
    live.write_bytes(b"in progress")
    lake.write_table("d/p/v1/data.parquet", table(5, value=2))
    assert sorted(os.listdir(tmp_path / "d/p/v1")) == sorted(["data.parquet", live.name])
    assert lake.read_table("d/p/v1/data.parquet").num_rows == 5


def test_io_manager_publishes_products_and_stores_intermediates(tmp_path, sources):
    """Through Dagster: a product is conformed and published; a bad one fails and publishes nothing."""
    from domains.claims.definitions import defs as claims_defs  # noqa: F401 - loads contracts
    from mesh_platform.contracts.registry import mesh_registry

    contract = mesh_registry().get("claims.claim_events")
    good = pd.DataFrame(
        {"event_id": [1, 2], "claim_id": ["C1", "C1"], "event_type": ["opened", "paid"], "occurred_at": pd.to_datetime(["2025-01-01", "2025-01-09"])}
    )
    state = {"df": good}

    @dg.asset(key=["claims", "claim_events"], metadata={"mesh/contract_id": contract.id})
    def events():
        return state["df"]

    @dg.asset(key=["claims", "scratch"])
    def scratch():
        return {"not": "classified"}

    @dg.asset(key=["claims", "reader"], ins={"ev": dg.AssetIn(key=["claims", "claim_events"], metadata={"mesh/columns": ["event_type"]})})
    def reader(ev):
        assert list(ev.columns) == ["event_type"]
        return None  # nothing to store

    resources = {"io_manager": MeshIOManager(lake=str(tmp_path))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([events, reader], resources=resources, instance=instance)
        assert result.success
        [mat] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["claims", "claim_events"])]
        meta = mat.materialization.metadata
        assert meta["dagster/uri"].value == f"file://{tmp_path}/claims/claim_events/v1"
        assert meta["mesh/delta_version"].value == 0 and meta["mesh/stored_bytes"].value > 0
        assert meta["dagster/row_count"].value == 2
        assert meta["mesh/contract_version"].value == contract.version

        # a private asset built around the declarations has no contract: its write is refused
        unclassified = dg.materialize([scratch], resources=resources, instance=instance, raise_on_error=False)
        assert not unclassified.success
        failure = next(e for e in unclassified.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        assert error.cause.cls_name == "PrivateDataRefused" and "claims/scratch has no contract" in error.cause.message
        assert not (tmp_path / "claims/_private/scratch").exists()

        state["df"] = good.assign(event_id=[1, 1])  # duplicate primary key
        bad = dg.materialize([events], resources=resources, instance=instance, raise_on_error=False)
        assert not bad.success
        failure = next(e for e in bad.all_events if e.is_step_failure)
        assert "primaryKey" in failure.step_failure_data.error.cause.message or "primaryKey" in failure.step_failure_data.error.message
    published = DeltaTable(str(tmp_path / "claims/claim_events/v1")).to_pandas()
    assert published["event_id"].tolist() == [1, 2]
