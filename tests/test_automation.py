"""What the daemon's automation would request, evaluated by Dagster on the real domains' definitions.

``dg.evaluate_automation_conditions`` runs the same evaluation the daemon's automation sensors run,
against a real (temporary) instance where upstream updates are reported as materializations. Each
test states what one event must cause, and nothing more (docs/automation.md):

- a new ``policies`` (read whole by claims) rebuilds no day of ``claims``; a new landed day
  rebuilds exactly that day;
- a new day of fraud's features is scored with the current model, without retraining it;
- a landed day refreshes that day of fraud's features and scores in one run; new outcomes (claims'
  events, the model's labels) rebuild no day;
- a new model (its retrain policy) rescores every day, as one run (single-run backfill);
- a model with too few labels is not built (no failed run), and is tried again on the next update;
- a landing refreshes analytics once, after fraud caught up with claims (not once on claims and again
  on the scores), and not later than a few minutes when fraud does not react or failed;
- an input updated while a mart's run was going refreshes the mart once more;
- a tick that sees a landing's claim events stored but not yet its claims waits a tick for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

import dagster as dg
import pytest

FEATURES = dg.AssetKey(["fraud", "claim_features"])
MODEL = dg.AssetKey(["fraud", "fraud_model"])
SCORES = dg.AssetKey(["fraud", "fraud_scores"])
EVENTS = dg.AssetKey(["claims", "claim_events"])


def _defs(domain: str) -> dg.Definitions:
    import importlib

    return importlib.import_module(f"domains.{domain}.definitions").defs


def _publish(instance, key: dg.AssetKey, partitions: list[str] | None = None) -> None:
    for partition in partitions or [None]:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


class Daemon:
    """Successive automation ticks over ``defs``, as the daemon evaluates them (one cursor)."""

    def __init__(self, defs, instance, selection):
        self.defs, self.instance, self.selection, self.cursor = defs, instance, selection, None
        self.now = dt.datetime.now(dt.timezone.utc)

    def tick(self, minutes: float = 1.0):
        self.now += dt.timedelta(minutes=minutes)
        result = dg.evaluate_automation_conditions(self.defs, self.instance, asset_selection=self.selection, evaluation_time=self.now, cursor=self.cursor)
        self.cursor = result.cursor
        return result


def _days(defs, key) -> list[str]:
    return defs.resolve_asset_graph().get(key).partitions_def.get_partition_keys()


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


CLAIMS, LANDED = dg.AssetKey(["claims", "claims"]), dg.AssetKey(["claims", "landed_claims"])


def _claims_with_history(instance):
    """The claims domain's automation over an instance where every day was built once (by the
    landing sensor's runs): its definitions, days and daemon."""
    defs = _defs("claims")
    days = _days(defs, CLAIMS)
    daemon = Daemon(defs, instance, dg.AssetSelection.assets(CLAIMS))
    _publish(instance, dg.AssetKey(["policies", "policies"]))
    _publish(instance, LANDED, days)
    _publish(instance, CLAIMS, days)
    daemon.tick()
    return defs, days, daemon


def test_a_new_policies_rebuilds_no_day_of_claims_and_a_landed_day_rebuilds_that_day(instance):
    defs, days, daemon = _claims_with_history(instance)
    claims, landed = CLAIMS, LANDED

    _publish(instance, dg.AssetKey(["policies", "policies"]))
    assert daemon.tick().get_requested_partitions(claims) == set()  # was every day (212 at scale 1)

    _publish(instance, landed, [days[-3]])
    assert daemon.tick().get_requested_partitions(claims) == {days[-3]}


def test_a_new_day_is_scored_with_the_current_model_and_a_new_model_rescores_every_day_in_one_run(instance):
    defs = _defs("fraud")
    days = _days(defs, SCORES)
    daemon = Daemon(defs, instance, dg.AssetSelection.assets(MODEL, SCORES))
    _publish(instance, FEATURES, days)
    _publish(instance, MODEL)
    _publish(instance, SCORES, days)
    daemon.tick()

    _publish(instance, FEATURES, [days[-1]])  # one new day of claims reached the features
    result = daemon.tick()
    assert result.get_num_requested(MODEL) == 0  # no retrain for a day of data (was: every new day)
    assert result.get_requested_partitions(SCORES) == {days[-1]}  # scored with the current model
    _publish(instance, SCORES, [days[-1]])  # (its run)
    assert daemon.tick().total_requested == 0

    _publish(instance, MODEL)  # the retrain policy produced a new model
    result = daemon.tick()
    assert result.get_requested_partitions(SCORES) == set(days)  # every day rescored ...
    policy = defs.resolve_asset_graph().get(SCORES).backfill_policy
    assert policy is not None and policy.max_partitions_per_run is None  # ... in one run


def test_a_landed_day_refreshes_that_day_of_fraud_in_one_run_and_new_outcomes_rebuild_no_day(instance):
    """Features are what was known at report time; outcomes (claims' events, weeks later) are the
    model's labels. So the claims of a new day refresh that day of features and of scores, in one
    run, and events alone rebuild no day (they rebuilt all of them when the features read events)."""
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

    defs = _defs("fraud")
    graph = defs.resolve_asset_graph()
    daemon = Daemon(defs, instance, dg.AssetSelection.groups("fraud"))
    daemon.now = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.timezone.utc)  # a Tuesday: no retrain due
    days = graph.get(FEATURES).partitions_def.get_partition_keys(current_time=daemon.now)  # the last is that day
    for upstream in (dg.AssetKey(["policies", "policies"]), dg.AssetKey(["customer_care", "claim_contacts"])):
        _publish(instance, upstream)
    for key in (CLAIMS, EVENTS, FEATURES, SCORES):
        _publish(instance, key, days)
    _publish(instance, MODEL)
    daemon.tick()

    _publish(instance, EVENTS, days[-40:])  # outcomes decided today, about claims of many days
    assert daemon.tick().total_requested == 0  # no day of features or scores; the model waits for its cron

    _publish(instance, CLAIMS, [days[-1]])  # the landing's run published today's claims
    result = daemon.tick()
    assert result.get_requested_partitions(FEATURES) == {days[-1]}
    assert result.get_requested_partitions(SCORES) == {days[-1]}  # with the current model, in the same tick
    assert result.get_num_requested(MODEL) == 0
    # the daemon's own grouping of that tick's requests: features and scores of the day in one run
    requests = build_run_requests(result._requested_subsets, graph, None, emit_backfills=True)
    assert [(sorted(k.to_user_string() for k in r.asset_selection), r.partition_key) for r in requests] == [
        (["fraud/claim_features", "fraud/fraud_scores"], days[-1])
    ]


def test_the_first_landing_of_a_day_builds_its_features_and_scores_in_one_run(instance):
    """A new day has no features yet: its scores must not wait for them to be published (a second
    fraud run on the next tick), they are requested with them and built after them in the same run."""
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

    defs = _defs("fraud")
    graph = defs.resolve_asset_graph()
    daemon = Daemon(defs, instance, dg.AssetSelection.groups("fraud"))
    daemon.now = dt.datetime(2026, 12, 8, 0, 1, tzinfo=dt.timezone.utc)  # just after midnight: today is a new day
    days = graph.get(FEATURES).partitions_def.get_partition_keys(current_time=daemon.now)
    for upstream in (dg.AssetKey(["policies", "policies"]), dg.AssetKey(["customer_care", "claim_contacts"])):
        _publish(instance, upstream)
    for key in (CLAIMS, EVENTS, FEATURES, SCORES):
        _publish(instance, key, days[:-1])
    _publish(instance, MODEL)
    daemon.tick()

    _publish(instance, CLAIMS, [days[-1]])  # the day's first landing
    result = daemon.tick()
    assert result.get_requested_partitions(FEATURES) == {days[-1]}
    assert result.get_requested_partitions(SCORES) == {days[-1]}
    requests = build_run_requests(result._requested_subsets, graph, None, emit_backfills=True)
    assert [(sorted(k.to_user_string() for k in r.asset_selection), r.partition_key) for r in requests] == [
        (["fraud/claim_features", "fraud/fraud_scores"], days[-1])
    ]


def test_the_model_retrains_on_its_schedule_when_features_changed(instance):
    defs = _defs("fraud")
    days = _days(defs, FEATURES)
    daemon = Daemon(defs, instance, dg.AssetSelection.assets(MODEL))
    daemon.now = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.timezone.utc)  # a Monday, before the 03:00 retrain
    _publish(instance, EVENTS, days)
    _publish(instance, FEATURES, days)
    _publish(instance, MODEL)
    daemon.tick()
    _publish(instance, FEATURES, [days[-1]])
    assert daemon.tick(minutes=30).get_num_requested(MODEL) == 0  # 02:31: not yet
    assert daemon.tick(minutes=40).get_num_requested(MODEL) == 1  # 03:11: the tick passed, features changed
    assert daemon.tick(minutes=10).get_num_requested(MODEL) == 0  # handled


def test_a_first_model_is_tried_on_each_update_until_it_can_be_built(instance):
    defs = _defs("fraud")
    days = _days(defs, FEATURES)
    daemon = Daemon(defs, instance, dg.AssetSelection.assets(MODEL))
    daemon.tick()
    _publish(instance, EVENTS, days[:3])
    _publish(instance, FEATURES, days[:3])
    assert daemon.tick().get_num_requested(MODEL) == 1  # never built: as soon as features exist
    # its run returned NotYet (too few labels): the step succeeded, nothing was stored
    assert daemon.tick().get_num_requested(MODEL) == 0  # not again on the same inputs
    _publish(instance, FEATURES, days[3:6])
    assert daemon.tick().get_num_requested(MODEL) == 1  # more data: tried again


def test_a_model_with_too_few_labels_is_not_built_and_the_run_succeeds(tmp_path):
    import pandas as pd

    from domains.fraud import definitions as fraud

    claims = [f"C{i}" for i in range(8)]
    few = pd.DataFrame({"claim_id": claims, **{c: [1.0] * 8 for c in fraud.FEATURES}})
    # five investigations ended (the first twice: its last outcome counts), one is still running
    events = pd.DataFrame({
        "claim_id": ["C0", "C0", "C1", "C2", "C3", "C4", "C5"],
        "event_type": ["fraud_cleared", "fraud_confirmed", "fraud_cleared", "fraud_confirmed", "fraud_cleared", "fraud_confirmed", "fraud_investigation_opened"],
    })
    assert fraud.labels(events).to_dict("records") == [
        {"claim_id": c, "confirmed_fraud": v} for c, v in [("C0", True), ("C1", False), ("C2", True), ("C3", False), ("C4", True)]
    ]
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([dg.AssetSpec(FEATURES), dg.AssetSpec(EVENTS), *[a for a in fraud.defs.assets if isinstance(a, dg.AssetsDefinition) and MODEL in a.keys]],
                            selection=[MODEL], resources={"io_manager": _Given({FEATURES: few, EVENTS: events})}, instance=instance)
    assert result.success
    assert not result.asset_materializations_for_node("fraud__fraud_model")
    # said at warning level: what reads the model is skipped, and `mesh dev` prints warnings only
    said = [(e.level, e.user_message) for e in instance.all_logs(result.run_id) if not e.is_dagster_event and "not built yet" in e.user_message]
    assert [level for level, _ in said] == [logging.WARNING], said


class _Given(dg.IOManager):
    def __init__(self, inputs):
        self.inputs = inputs

    def load_input(self, context):
        return self.inputs[context.asset_key]

    def handle_output(self, context, obj):
        raise AssertionError("nothing may be stored")


def _run_of(instance, request: dg.RunRequest, job_name: str):
    """The run the daemon makes of a sensor's request (its selection and tags), started."""
    import uuid

    from dagster._core.storage.dagster_run import DagsterRun

    run = DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, tags=request.tags,
                     asset_selection=frozenset(request.asset_selection) if request.asset_selection else None)
    instance.add_run(run)
    return run


def _publish_in_run(instance, run, key: dg.AssetKey, partitions: list[str]) -> None:
    """Materializations stored as a step of ``run`` reports them (automation looks up the run that made each)."""
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

    for partition in partitions:
        event = DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value, job_name=run.job_name,
                             event_specific_data=StepMaterializationData(dg.AssetMaterialization(asset_key=key, partition=partition)))
        instance.report_dagster_event(event, run_id=run.run_id)


def test_a_landing_sensor_run_is_not_followed_by_a_second_claims_run_over_its_day(instance, tmp_path):
    """The landing sensor's run builds the landed files, claims and claim events of the days it
    touches. Publishing the landed files first used to make claims' automation start a second run
    over the same day while the first was still building it (docs/automation.md): the sensor's run
    named no assets, so automation could not tell it was building claims."""
    from domains.claims.definitions import claims_job

    from mesh_platform import LandingZone, landing_zone_sensor

    defs, days, daemon = _claims_with_history(instance)
    claims, landed = CLAIMS, LANDED

    zone = tmp_path / "landing"
    zone.mkdir()
    (zone / "claims_batch_0009.csv").write_text(f"claim_no,reported_at\nCLM-1,{days[-2]}T10:00:00\n")
    sensor = landing_zone_sensor(name="s", job=claims_job, landing=LandingZone(path=str(zone)), patterns=["claims_*.csv"],
                                 days={"claims_*.csv": "reported_at"}, settle_seconds=0)
    [request] = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert claims in request.asset_selection and landed in request.asset_selection
    run = _run_of(instance, request, claims_job.name)

    _publish_in_run(instance, run, landed, [days[-2]])  # the run's first step is done; claims is next
    assert daemon.tick().get_requested_partitions(claims) == set()
    _publish_in_run(instance, run, claims, [days[-2]])
    assert daemon.tick().get_requested_partitions(claims) == set()

    _publish(instance, landed, [days[-1]])  # a build of the landed files alone (not claims): that day is due
    assert daemon.tick().get_requested_partitions(claims) == {days[-1]}


def test_a_landing_run_over_several_days_is_not_followed_by_a_claims_run(instance):
    """Dagster recognizes a range run's own updates (``executed_with_root_target``) for the range's
    last day only: counting the landed files' updates from claims' last request would rebuild every
    other day of every landing run once more. Its own domain's inputs count from the last build."""
    defs, days, daemon = _claims_with_history(instance)
    selection = sorted(defs.resolve_job_def("claims_products").asset_layer.selected_asset_keys, key=lambda k: k.to_user_string())
    touched = days[-6:-1]
    run = _run_of(instance, dg.RunRequest(asset_selection=selection, tags={"dagster/asset_partition_range_start": touched[0],
                                                                          "dagster/asset_partition_range_end": touched[-1]}), "claims_products")
    _publish_in_run(instance, run, LANDED, touched)
    _publish_in_run(instance, run, CLAIMS, touched)
    assert daemon.tick().get_requested_partitions(CLAIMS) == set()  # was the range's first four days


MARTS = [dg.AssetKey(["analytics", m]) for m in ("claims_weekly", "contact_rate", "fraud_hit_rate", "loss_ratio")]
HIT_RATE = dg.AssetKey(["analytics", "fraud_hit_rate"])


def _finish(instance, run, failed: bool = False) -> None:
    """The run ends (success or failure), as its process reports it."""
    kind = dg.DagsterEventType.RUN_FAILURE if failed else dg.DagsterEventType.RUN_SUCCESS
    instance.report_dagster_event(dg.DagsterEvent(event_type_value=kind.value, job_name=run.job_name), run_id=run.run_id)


def _run_building(instance, plan: dict[dg.AssetKey, list[str | None]]):
    """A started run that plans to build these asset partitions, as the daemon creates one (it
    records each planned materialization: what Dagster's ``in_progress`` looks at)."""
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType

    run = _run_of(instance, dg.RunRequest(asset_selection=list(plan)), "__ASSET_JOB")
    for key, partitions in plan.items():
        for partition in partitions:
            event = DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value, job_name=run.job_name,
                                 event_specific_data=AssetMaterializationPlannedData(key, partition=partition))
            instance.report_dagster_event(event, run_id=run.run_id)
    return run


def _requested(result) -> set[dg.AssetKey]:
    return {k for k in MARTS if result.get_num_requested(k)}


def _analytics_with_history(instance):
    """Analytics' automation (its own definitions: the products it reads are external assets there,
    as in the daemon's workspace) over an instance where every input and mart was built once."""
    defs = _defs("analytics")
    graph = defs.resolve_asset_graph()
    daemon = Daemon(defs, instance, dg.AssetSelection.assets(*MARTS))
    daemon.now = dt.datetime(2026, 12, 8, 12, 0, 30, tzinfo=dt.timezone.utc)
    days = graph.get(CLAIMS).partitions_def.get_partition_keys(current_time=daemon.now)
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[0] != "analytics" and not node.is_materializable:
            _publish(instance, key, days if node.partitions_def is not None else None)
    for key in MARTS:
        _publish(instance, key)
    daemon.tick(0.1)
    assert daemon.tick(0.1).total_requested == 0
    return days, daemon


def test_a_landing_refreshes_analytics_once_after_fraud_caught_up_with_claims(instance):
    """Claims feeds fraud's scores (through fraud's features, day by day), and analytics reads both.
    Refreshing the marts as soon as claims was published, then again once fraud had scored the day,
    was two analytics runs per landing, the first with the previous batch's scores. The marts wait
    until the scores caught up with claims, then refresh in one run."""
    days, daemon = _analytics_with_history(instance)

    _publish(instance, CLAIMS, [days[-1]])  # the landing's claims run published today's claims and events
    _publish(instance, EVENTS, [days[-1]])
    assert daemon.tick(0.1).total_requested == 0  # fraud has not requested its run yet: its scores are behind
    run = _run_building(instance, {FEATURES: [days[-1]], SCORES: [days[-1]]})  # fraud's run
    assert daemon.tick(0.1).total_requested == 0
    _publish_in_run(instance, run, SCORES, [days[-1]])
    assert _requested(daemon.tick(0.1)) == set(MARTS)  # every mart on the same tick: one run
    _finish(instance, run)
    assert daemon.tick(0.1).total_requested == 0


def test_a_failed_fraud_build_or_the_time_limit_lets_analytics_go_on(instance):
    """Waiting for fraud helps only while fraud is on its way: not once its build failed, nor past
    the limit when it does not react at all."""
    days, daemon = _analytics_with_history(instance)
    _publish(instance, CLAIMS, [days[-1]])
    assert daemon.tick(0.1).total_requested == 0
    assert daemon.tick(2).total_requested == 0  # 12:02:48, and fraud has not caught up
    assert daemon.tick(3).total_requested == 0  # 12:05:48: the limit's first tick since claims' update
    # past 12:10: a producer that does not react (its automation stopped) holds the marts back minutes, not forever
    # (the hit rate reads claims' events and fraud's scores, not claims: nothing of it changed)
    assert _requested(daemon.tick(5)) == set(MARTS) - {HIT_RATE}

    _publish(instance, CLAIMS, [days[-1]])
    assert daemon.tick(0.1).total_requested == 0
    run = _run_building(instance, {FEATURES: [days[-1]], SCORES: [days[-1]]})
    _finish(instance, run, failed=True)
    # fraud failed: the marts that do not read its scores refresh; the hit rate waits for a good build
    assert _requested(daemon.tick(0.1)) == set(MARTS) - {HIT_RATE}


def test_claims_updated_just_before_the_limits_tick_still_waits_for_fraud(instance):
    """The limit counts from claims' update: published a few seconds before a 5-minute mark, the
    marts still wait for fraud's run (the stack refreshed them before fraud's run existed, and again
    after it, when the first tick of the limit's cron ended the wait)."""
    days, daemon = _analytics_with_history(instance)  # 12:00:42
    assert daemon.tick(4.2).total_requested == 0  # 12:04:54
    _publish(instance, CLAIMS, [days[-1]])
    assert daemon.tick(0.15).total_requested == 0  # 12:05:03, past 12:05: fraud's run is not even created yet
    run = _run_building(instance, {FEATURES: [days[-1]], SCORES: [days[-1]]})
    assert daemon.tick(0.1).total_requested == 0
    _publish_in_run(instance, run, SCORES, [days[-1]])
    assert _requested(daemon.tick(0.1)) == set(MARTS)
    _finish(instance, run)
    assert daemon.tick(0.1).total_requested == 0


def test_an_input_updated_while_a_mart_runs_refreshes_it_once_more(instance):
    """A run reads its inputs when it starts. Scores published while the hit rate's run was going
    were not in it, though the hit rate was stored after them (Dagster's ``since_last_handled``
    counted them as handled): it runs once more."""
    days, daemon = _analytics_with_history(instance)
    _publish(instance, EVENTS, [days[-1]])  # new outcomes, without claims
    assert daemon.tick(0.1).total_requested == 0  # one tick for claims of the same landing to show (see the test below)
    assert _requested(daemon.tick(0.1)) == {HIT_RATE}
    run = _run_building(instance, {HIT_RATE: [None]})
    assert daemon.tick(0.1).total_requested == 0  # (being built)
    _publish(instance, SCORES, [days[-1]])  # fraud scored a day meanwhile
    assert daemon.tick(0.1).total_requested == 0  # (still being built)
    _publish_in_run(instance, run, HIT_RATE, [None])
    _finish(instance, run)
    assert _requested(daemon.tick(0.1)) == {HIT_RATE}
    assert daemon.tick(0.1).total_requested == 0


def _range_run_of_claims(instance, days: list[str]):
    """The landing sensor's run over ``days`` (a range, one run), created by Dagster as the daemon
    creates it: its planned events are what tells automation which days it is building."""
    job = _defs("claims").resolve_job_def("claims_products")
    return instance.create_run_for_job(job, tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
                                       status=dg.DagsterRunStatus.STARTED)


def test_a_mart_waits_while_a_landing_run_builds_claims_and_after_it_failed(instance, monkeypatch):
    """A landing run publishes claim events before claims. With one planned event for the whole
    range, Dagster saw no day of claims in progress: the hit rate (it read both then) started on the
    events while claims was still being built, and ran again after fraud (an extra analytics run in
    a third of the stack's landings). Where automation runs, the platform keeps Dagster's per-day
    planned events (``settings.planned_per_run``), which also mark a failed run's days failed."""
    import subprocess
    import sys

    from mesh_platform.foundations.settings import PLANNED_PER_RUN, planned_per_run

    def chosen(automation: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != PLANNED_PER_RUN} | {"MESH_AUTOMATION": automation}
        code = f"import os, mesh_platform; print(os.environ[{PLANNED_PER_RUN!r}])"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()

    assert (chosen("on"), chosen("off")) == (planned_per_run(True), planned_per_run(False)) == ("false", "true")

    monkeypatch.setenv(PLANNED_PER_RUN, planned_per_run(True))
    days, daemon = _analytics_with_history(instance)
    run = _range_run_of_claims(instance, days[-1:])
    _publish_in_run(instance, run, EVENTS, [days[-1]])
    assert daemon.tick(0.1).total_requested == 0  # claims is still being built
    # and still on the next ticks: the hit rate reads the events, not claims, but claims on its way
    # is on its way to fraud's scores, which the hit rate reads
    assert daemon.tick(0.1).total_requested == 0
    assert daemon.tick(0.1).total_requested == 0
    _finish(instance, run, failed=True)
    # its build failed: nothing reads the last good claims; the hit rate refreshes on the events,
    # which were published (fraud's scores stay as they are: its input did not change)
    assert _requested(daemon.tick(0.1)) == {HIT_RATE}


def test_a_mart_does_not_start_on_the_claim_events_of_a_landing_whose_claims_a_tick_sees_stored_late(instance, monkeypatch):
    """Dagster reads a tick's updates from the event log as it was when the tick began, and
    ``in_progress`` live. A landing run stores the claim events, then claims: a tick that began
    between the two and looked at claims' progress after claims was stored saw the events updated,
    nothing in progress, and claims not updated (no wait for fraud). The hit rate ran alone, and
    again after fraud (one landing of twelve at scale 100 in the freshness benchmark). Updated
    claim events without claims on the same tick are left for the next tick."""
    from dagster._core.definitions.declarative_automation import automation_condition_evaluator

    from mesh_platform.foundations.settings import PLANNED_PER_RUN, planned_per_run

    monkeypatch.setenv(PLANNED_PER_RUN, planned_per_run(True))
    days, daemon = _analytics_with_history(instance)
    run = _range_run_of_claims(instance, days[-1:])
    _publish_in_run(instance, run, EVENTS, [days[-1]])
    began = instance.event_log_storage.get_maximum_record_id()  # the tick begins here ...
    _publish_in_run(instance, run, CLAIMS, [days[-1]])  # ... and claims is stored while it evaluates
    # the tick's updates bounded by its beginning (Dagster's upper bound on the events a tick reads)
    monkeypatch.setenv(automation_condition_evaluator.AUTOMATION_TICK_SETTLE_SECONDS_ENV_VAR, "1")
    with monkeypatch.context() as tick:
        tick.setattr(type(instance.event_log_storage), "get_maximum_record_id", lambda self: began)
        assert daemon.tick(0.1).total_requested == 0  # was the hit rate alone
    _finish(instance, run)
    assert daemon.tick(0.1).total_requested == 0  # claims seen updated: wait for fraud to catch up
    fraud = _run_building(instance, {FEATURES: [days[-1]], SCORES: [days[-1]]})
    _publish_in_run(instance, fraud, SCORES, [days[-1]])
    assert _requested(daemon.tick(0.1)) == set(MARTS)  # one analytics run for the landing
    _finish(instance, fraud)
    assert daemon.tick(0.1).total_requested == 0
