"""The claims landing-zone sensor and the deterministic source simulator."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from mesh_platform.sources.landing_sensor import landing_zone_sensor
from mesh_platform.sources.simulation import SourceLayout, simulate
from mesh_platform.sources.systems import LandingZone


def test_simulation_is_deterministic_and_scales(tmp_path):
    a = simulate(tmp_path / "a", scale=0.2, seed=3)
    b = simulate(tmp_path / "b", scale=0.2, seed=3)
    big = simulate(tmp_path / "c", scale=0.4, seed=3)
    assert a == {**b}
    assert big["customers"] == 2 * a["customers"] and big["policies"] == 2 * a["policies"]
    for name in ("claims_batch_0001.csv", "claims_batch_0004.csv"):
        assert (tmp_path / "a/claims_landing" / name).read_bytes() == (tmp_path / "b/claims_landing" / name).read_bytes()
    layout = SourceLayout(tmp_path / "a")
    chats = pd.read_json(layout.chat_export, lines=True)
    assert chats["transcript"].str.contains("@example.com").any()  # the raw export does leak contact details


def test_landing_sensor_waits_for_upstream_then_requests_one_run_per_new_batch(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    job = dg.define_asset_job("claims_products", selection=dg.AssetSelection.all())
    sensor = landing_zone_sensor(
        name="s", job=job, landing=LandingZone(path=str(landing)), patterns=["claims_*.csv"], waits_for=[["policies", "policies"]], settle_seconds=0
    )
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        assert "no new files" in sensor(ctx).skip_message
        (landing / "claims_batch_0001.csv").write_text("x\n")
        result = sensor(ctx)
        assert "waiting for upstream products to be published: policies/policies" in result.skip_message
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["policies", "policies"])))
        request = sensor(ctx)
        assert isinstance(request, dg.RunRequest) and request.tags["mesh/landed_files"] == "1"
        assert json.loads(ctx.cursor) == ["claims_batch_0001.csv"]
        ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        assert "no new files" in sensor(ctx2).skip_message
        (landing / "claims_batch_0002.csv").write_text("x\n")
        second = sensor(ctx2)
        assert isinstance(second, dg.RunRequest) and second.run_key != request.run_key


def test_landing_sensor_waits_while_a_run_of_its_own_job_is_in_flight(tmp_path):
    """A run of the sensor's job has no asset selection of its own; it still reads the landing zone.
    Requesting beside it made a second run over files the first had read (docs/automation.md)."""
    from dagster._core.storage.dagster_run import DagsterRun

    landing = tmp_path / "landing"
    landing.mkdir()
    job = dg.define_asset_job("claims_products", selection=dg.AssetSelection.all())
    sensor = landing_zone_sensor(name="s", job=job, landing=LandingZone(path=str(landing)), patterns=["claims_*.csv"],
                                 readers=[["claims", "landed_claims"]], settle_seconds=0)
    with dg.instance_for_test() as instance:
        (landing / "claims_batch_0001.csv").write_text("x\n")
        instance.add_run(DagsterRun(job_name="claims_products", run_id="a1b2c3d4-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.STARTED))
        ctx = dg.build_sensor_context(instance=instance)
        assert "waiting for run(s) already reading the landing zone: a1b2c3d4" in sensor(ctx).skip_message
        instance.add_run(DagsterRun(job_name="other_job", run_id="e5f6a7b8-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.STARTED))
        instance.report_run_failed(instance.get_run_by_id("a1b2c3d4-0000-0000-0000-000000000000"))
        # (not started yet: queued runs need a code location's origin to be stored, and count the same)
        instance.add_run(DagsterRun(job_name="claims_products", run_id="c9d0e1f2-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.NOT_STARTED,
                                    asset_selection=frozenset({dg.AssetKey(["claims", "landed_claims"])})))
        # a run not started yet reads every file with rows on its days when it starts: these files too
        assert "waiting for run(s) already reading the landing zone: c9d0e1f2" in sensor(ctx).skip_message
        instance.report_run_canceled(instance.get_run_by_id("c9d0e1f2-0000-0000-0000-000000000000"))
        assert isinstance(sensor(ctx), dg.RunRequest)  # another job's run reads nothing here


def test_a_batch_runs_once_all_its_files_have_landed(tmp_path):
    """Claims, then their events: a tick between the two used to run the claims alone and the events
    in a second run over the same days. The sensor waits until the batch has been quiet a moment, and
    lists the zone once for every pattern."""
    import os
    import time

    landing = tmp_path / "landing"
    landing.mkdir()
    job = dg.define_asset_job("claims_products", selection=dg.AssetSelection.all())
    sensor = landing_zone_sensor(name="s", job=job, landing=LandingZone(path=str(landing)),
                                 patterns=["claims_*.csv", "claim_events_*.jsonl"], settle_seconds=30)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        (landing / "claims_batch_0001.csv").write_text("x\n")
        waiting = sensor(ctx)
        assert "1 new file(s) still landing" in waiting.skip_message and ctx.cursor is None
        (landing / "claim_events_0001.jsonl").write_text("{}\n")
        assert "2 new file(s) still landing" in sensor(ctx).skip_message
        quiet = time.time() - 60
        for path in landing.iterdir():
            os.utime(path, (quiet, quiet))
        request = sensor(ctx)
        assert isinstance(request, dg.RunRequest) and request.tags["mesh/landed_files"] == "2"
        assert json.loads(ctx.cursor) == ["claim_events_0001.jsonl", "claims_batch_0001.csv"]


def test_claims_definitions_carry_the_landing_sensor():
    from domains.claims.definitions import defs

    sensor = defs.resolve_sensor_def("claims_landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "claims_products"
