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
- a model with too few labels is not built (no failed run), and is tried again on the next update.
"""

from __future__ import annotations

import datetime as dt
import logging

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
