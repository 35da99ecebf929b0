"""The lake on S3: the same publish and read path against a real S3-speaking server (moto, loopback)."""

from __future__ import annotations


import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from mesh_platform.storage import delta
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake


def test_write_and_read_a_port_on_s3(s3_lake):
    lake = Lake(s3_lake)
    published = lake.write_table("d/p/v1/data.parquet", pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}))
    assert published.uri == f"{s3_lake}/d/p/v1/data.parquet" and published.rows == 3 and published.bytes > 0
    assert lake.read_table("d/p/v1/data.parquet", columns=["v"]).to_pydict() == {"v": ["a", "b", "c"]}
    lake.write_object("d/_private/m/data.pickle", {"model": 1})
    assert lake.read_object("d/_private/m/data.pickle") == {"model": 1}


def test_io_manager_publishes_to_s3_and_keeps_last_good_version(s3_lake, sources):
    from mesh_platform.contracts.registry import mesh_registry

    contract = mesh_registry().get("claims.claim_events")
    frame = {"df": pd.DataFrame({"event_id": [1], "claim_id": ["C1"], "event_type": ["opened"], "occurred_at": pd.to_datetime(["2025-01-01"])})}

    @dg.asset(key=["claims", "claim_events"], metadata={"mesh/contract_id": contract.id})
    def events():
        return frame["df"]

    resources = {"io_manager": MeshIOManager(lake=s3_lake)}
    with dg.instance_for_test() as instance:
        assert dg.materialize([events], resources=resources, instance=instance).success
        frame["df"] = frame["df"].assign(event_type=None)  # breaks `required`
        assert not dg.materialize([events], resources=resources, instance=instance, raise_on_error=False).success
    survivor, version = delta.read(Lake(s3_lake), "claims/claim_events/v1", "claims.claim_events v1")
    assert survivor.to_pandas()["event_type"].tolist() == ["opened"] and version == 0


def test_a_key_check_overlapping_the_write_on_s3_commits_only_when_it_passes(s3_lake, sources, monkeypatch):
    """The overlapped key check (mesh_platform.storage.gate) on S3: a unique key publishes (the stream
    ends, delta-rs commits), a duplicate one ends the stream with its error and commits nothing."""
    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.storage import gate

    monkeypatch.setattr(gate, "OVERLAP_MIN_ROWS", 1)
    contract = mesh_registry().get("claims.claim_events")
    frame = {"df": pd.DataFrame({"event_id": [1, 2], "claim_id": ["C1", "C1"], "event_type": ["opened", "paid"], "occurred_at": pd.to_datetime(["2025-01-01", "2025-01-02"])})}

    @dg.asset(key=["claims", "claim_events"], metadata={"mesh/contract_id": contract.id})
    def events():
        return frame["df"]

    resources = {"io_manager": MeshIOManager(lake=s3_lake)}
    with dg.instance_for_test() as instance:
        assert dg.materialize([events], resources=resources, instance=instance).success
        frame["df"] = frame["df"].assign(event_id=[7, 7], event_type=["x", "y"])
        failed = dg.materialize([events], resources=resources, instance=instance, raise_on_error=False)
        assert not failed.success and "primaryKey" in failed.get_step_failure_events()[0].step_failure_data.error.to_string()
    survivor, version = delta.read(Lake(s3_lake), "claims/claim_events/v1", "claims.claim_events v1")
    assert survivor.to_pandas()["event_type"].tolist() == ["opened", "paid"] and version == 0
