"""SLAs become Dagster freshness policies and automation conditions.

- ``slaProperties: latency`` -> ``dg.FreshnessPolicy.time_window(fail_window=latency)`` (warning at
  80%): a product older than its latency shows as stale in the UI.
- ``slaProperties: frequency`` -> a source-aligned domain (fed by operational systems) gets a
  schedule at the highest frequency its products promise (:func:`sla_schedule`), over the
  domain's job; a product that consumes other products is ``eager``: it refreshes when an
  upstream product is published (across code locations), evaluated by the daemon.
- Each domain gets an automation-condition sensor. It and the schedules are stopped by default, so
  a laptop running `dagster dev` does not start work on its own; ``MESH_AUTOMATION=on``
  (production, and `mesh stack up`) starts them. Runs they start carry ``mesh/domain``, so the
  run queue's per-domain limits apply. ``MESH_AUTOMATION_INTERVAL`` (seconds, default 30) is how
  often the daemon evaluates the conditions.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import dagster as dg

from mesh_platform.contracts.model import Contract
from mesh_platform.foundations.settings import daemon_interval


def freshness_policy(contract: Contract) -> dg.FreshnessPolicy | None:
    hours = contract.sla_hours("latency")
    if not hours:
        return None
    fail = timedelta(hours=hours)
    warn = max(timedelta(minutes=1), fail * 0.8)
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if warn < fail else None)


def cron_for(hours: float) -> str:
    if hours <= 1:
        return "0 * * * *"
    if hours < 24:
        return f"0 */{int(round(hours))} * * *"
    if hours < 24 * 7:
        return "0 2 * * *" if hours < 48 else f"0 2 */{int(round(hours / 24))} * *"
    return "0 2 * * 1"


def automation_condition(contract: Contract | None, has_inputs: bool, partitioned: bool = False, reads_partitioned: bool = False,
                         read_whole: frozenset[dg.AssetKey] = frozenset(), refresh: str | None = None,
                         catch_up: frozenset[tuple[dg.AssetKey, dg.AssetKey]] = frozenset(),
                         foreign: frozenset[dg.AssetKey] = frozenset()) -> dg.AutomationCondition | None:
    """``eager`` for a product that consumes others; one fed only by its source follows its domain's schedule.

    Daily partitions change two things (:mod:`mesh_platform.products.partitions`). Dagster's ``eager`` only
    looks at the latest day of a partitioned asset, and waits while any upstream partition is
    missing; but the claims sensor publishes the days that batches touch (often past days), and a
    day without data is never materialized. So a partitioned product refreshes **the days whose
    upstream days were updated** (:func:`_days_updated`; Dagster turns the days into runs by the
    asset's single-run backfill policy), and a product reading a partitioned one refreshes when an
    upstream day was updated, without waiting for every day (:func:`_any_day_updated`); both wait
    until every upstream asset has been published at least once (:func:`_published`).

    ``read_whole``: the unpartitioned input ports (other domains' products) of a partitioned product
    (``policies`` for claims). A day is built from them as they are when the day is built; their
    updates do not rebuild every day (with Dagster's default mapping, one new ``policies`` marked all
    212 days of ``claims`` and of fraud's features for a refresh). A correction to them reaches a day
    when that day is next built. An unpartitioned upstream of the product's own domain (fraud's
    model for its scores) does rebuild every day, in one run: the domain decides how often it
    changes (``docs/automation.md``).

    ``catch_up`` (an unpartitioned asset of a domain reading several products, analytics' marts):
    pairs (U, P) of products the domain reads where U feeds P through daily-partitioned products
    (:func:`catch_up_pairs`: claims feeds fraud's scores through fraud's features). After U was
    updated, the asset waits until P has caught up, so that one run of the domain takes the whole
    change instead of one run on U and another on P (:func:`_caught_up`).

    ``foreign`` (an unpartitioned asset): the input ports (other domains' products) among its
    inputs. An update of one of them counts from the asset's last **request**, not from its last build (Dagster's
    ``since_last_handled``): a product published while the asset's own run was going, before the
    asset was stored, was not read by that run (it read its inputs when it started), so the asset
    runs once more for it (:func:`_since_requested`). Its own domain's inputs keep Dagster's
    counting: they are built in the same runs as the asset (the landing sensor's run builds the
    landed files and claims), and Dagster tells a run's own updates apart only for the last day of
    a range of days (``executed_with_root_target``), so counting from the request would rebuild
    every other day of every such run once more. A daily-partitioned asset keeps Dagster's counting
    for every input: counted from the request, fraud's features in the stack test's bootstrap were
    requested for the last days only, and the model never had labels to train on.
    """
    if not has_inputs:
        return None
    if refresh is not None and not partitioned:
        return _on_refresh(refresh)
    foreign = frozenset(foreign) - frozenset(read_whole)
    if partitioned:  # days: Dagster's counting for every input (see the note on ``foreign`` above)
        return _days_updated(frozenset(read_whole))
    return _any_day_updated(frozenset(catch_up), foreign) if reads_partitioned else _eager(frozenset(catch_up), foreign)


def catch_up_pairs(read, registry) -> frozenset[tuple[dg.AssetKey, dg.AssetKey]]:
    """(U, P) among the input ports ``read`` (resolved: contract and asset key): U feeds P through daily-partitioned products, by the
    column lineage of the contracts (``transformSourceObjects``). A daily-partitioned product
    refreshes the days its daily-partitioned inputs updated (:func:`_days_updated`), so an update
    of U is on its way to P; an unpartitioned link (a product read whole) is not followed: it
    rebuilds nothing downstream. Without declared lineage there is no pair, and a consumer runs
    once on U and again on P."""
    from mesh_platform.products import partitions

    def parents(contract: Contract) -> set[str]:
        return {str(ref).rpartition(".")[0] for table in contract.schema_objects for col in table.properties
                for ref in col.transform_source_objects} - {contract.id}

    def partitioned_ancestors(contract: Contract) -> set[str]:
        found, todo = set(), [contract]
        while todo:
            for ref in parents(todo.pop()):
                if ref in found:
                    continue
                try:
                    upstream = registry.get(ref)
                except LookupError:  # a lineage reference the registry does not know: nothing to follow
                    continue
                if partitions.of(upstream) is not None:
                    found.add(ref)
                    todo.append(upstream)
        return found

    by_id = {port.contract.id: port for port in read}
    pairs = set()
    for port in by_id.values():
        if partitions.of(port.contract) is None:
            continue
        for ref in partitioned_ancestors(port.contract) & set(by_id):
            pairs.add((by_id[ref].key, port.key))
    return frozenset(pairs)


@functools.cache
def _days_updated(read_whole: frozenset[dg.AssetKey] = frozenset()) -> dg.AutomationCondition:
    label = "eager (every day updated upstream)"
    if read_whole:
        label = "eager (every day updated upstream; " + ", ".join(sorted(k.to_user_string() for k in read_whole)) + " read as they are)"
    return (_inputs_updated(frozenset(), read_whole) & _ready()).with_label(label)


def _selection(keys: frozenset[dg.AssetKey]) -> dg.AssetSelection:
    return dg.AssetSelection.assets(*sorted(keys, key=lambda k: k.to_user_string()))


def _inputs_updated(foreign: frozenset[dg.AssetKey], ignored: frozenset[dg.AssetKey] = frozenset(), missing: bool = False) -> dg.AutomationCondition:
    """An input was updated: one of ``foreign`` since the asset was last requested, one of its own
    domain since it was last requested or updated (see :func:`automation_condition`); ``ignored``
    (products read whole) never counts; ``missing``: the asset newly missing counts too."""
    A = dg.AutomationCondition
    own = A.any_deps_updated()
    if foreign | ignored:
        own = own.ignore(_selection(foreign | ignored))
    if missing:
        own = A.newly_missing() | own
    condition = own.since_last_handled()
    if foreign:
        condition = _since_requested(A.any_deps_updated().allow(_selection(foreign))) | condition
    return condition


@functools.cache
def _any_day_updated(catch_up: frozenset[tuple[dg.AssetKey, dg.AssetKey]] = frozenset(), foreign: frozenset[dg.AssetKey] = frozenset()) -> dg.AutomationCondition:
    condition = _inputs_updated(foreign, missing=True) & _ready()
    if catch_up:
        condition = condition & _caught_up(catch_up, foreign)
    return condition.with_label("eager (any upstream day)" + _catch_up_label(catch_up))


def _since_requested(updated: dg.AutomationCondition) -> dg.AutomationCondition:
    """``updated`` happened since the asset was last requested (or the condition is new).

    ``newly_requested`` is true on the tick after the request; an input updated between those two
    ticks is newer than the request (its run may not read it), so that tick does not clear it: the
    asset runs once more rather than never for that update."""
    A = dg.AutomationCondition
    return updated.since(((A.newly_requested() & ~updated) | A.initial_evaluation()).with_label("requested"))


CATCH_UP_LIMIT = "*/5 * * * *"
"""How long a consumer waits at most for P to catch up with U (:func:`_caught_up`): until the
second tick of this cron after U's update (5 to 10 minutes), so that a producer that does not react
(its automation stopped, its code location down) holds a consumer back minutes, not forever. The
first tick alone would be no limit: it can come a second after U's update (one landing in 36 of the
freshness benchmark refreshed the marts before fraud's run existed, and again after it)."""


def _caught_up(pairs: frozenset[tuple[dg.AssetKey, dg.AssetKey]], foreign: frozenset[dg.AssetKey] = frozenset()) -> dg.AutomationCondition:
    """For every pair (U, P): neither U nor P is being built, and U was not updated after P's last
    update (or P's latest build failed, or :data:`CATCH_UP_LIMIT` ticked twice since: waiting longer
    helps nothing). U being built counts for an asset that does not read U itself (the hit rate
    reads claims' events and fraud's scores, not claims): Dagster's own test of the inputs in
    progress does not see it, and a landing run's events, stored before claims, would start it.

    And a **sibling** S of U (another input of ``foreign`` from U's domain, not a P: claims' events
    beside claims) updated on a tick that does not see U updated waits one tick. The producer's
    runs store both, one after the other (the landing run stores the events, then claims), and
    Dagster reads a tick's updates from the event log as it was when the tick began, but
    ``in_progress`` live: a tick that began between the two, and looked at U's progress after U was
    stored, saw S updated, nothing in progress and U not updated, so no wait for P. The hit rate ran
    alone before fraud, and again after it (one landing of twelve at scale 100). On the next tick
    U's update is seen and the wait for P holds; S updated alone (no U in the run) costs one tick."""
    A = dg.AutomationCondition
    waiting = []
    for upstream, product in sorted(pairs, key=lambda p: (p[0].to_user_string(), p[1].to_user_string())):
        updated = A.asset_matches(upstream, A.newly_updated())
        ticked = A.cron_tick_passed(CATCH_UP_LIMIT).since(updated)  # the limit's cron ticked since U's update ...
        limit = A.cron_tick_passed(CATCH_UP_LIMIT) & ticked & ~ticked.newly_true()  # ... and ticks again now
        behind = updated.since(A.asset_matches(product, A.newly_updated() | A.execution_failed()) | limit)
        waiting.append(behind | A.asset_matches(product, A.in_progress()) | A.asset_matches(upstream, A.in_progress()))
    upstreams, products = {u for u, _ in pairs}, {p for _, p in pairs}
    siblings = {(s, u) for u in upstreams for s in foreign if s.path[0] == u.path[0] and s != u and s not in products}
    for sibling, upstream in sorted(siblings, key=lambda p: (p[0].to_user_string(), p[1].to_user_string())):
        seen_alone = A.asset_matches(sibling, A.newly_updated()) & ~A.asset_matches(upstream, A.newly_updated())
        waiting.append(seen_alone.with_label(f"{sibling.to_user_string()} updated on a tick without {upstream.to_user_string()}"))
    return ~functools.reduce(lambda a, b: a | b, waiting)


def _catch_up_label(pairs: frozenset[tuple[dg.AssetKey, dg.AssetKey]]) -> str:
    if not pairs:
        return ""
    return "; after " + ", ".join(sorted(f"{p.to_user_string()} caught up with {u.to_user_string()}" for u, p in pairs))


@functools.cache
def _on_refresh(cron: str) -> dg.AutomationCondition:
    """Rebuilt at each tick of ``cron`` when an input was updated since the previous tick (a model
    retrained weekly on the week's new labels), and, while it was never built, whenever an input is
    updated (its first build; a transform that returns ``NotYet`` leaves it unbuilt, to try again)."""
    A = dg.AutomationCondition
    updated = A.any_deps_updated().since_last_handled()  # an input changed since its last build (or request)
    on_tick = A.cron_tick_passed(cron).since_last_handled() & updated
    first = A.missing() & updated
    return ((on_tick | first) & _ready()).with_label(f"refresh on {cron} (when an input changed)")


def _ready() -> dg.AutomationCondition:
    """Nothing runs on an upstream that is unpublished, being rebuilt, or whose latest build failed
    (it would read the last good version while a new one is due), nor while it is itself running."""
    A = dg.AutomationCondition
    return _published() & ~A.any_deps_in_progress() & ~A.any_deps_match(A.execution_failed()) & ~A.in_progress()


def _published() -> dg.AutomationCondition:
    """Every upstream asset has been published, a partitioned one on at least one of the days read
    (Dagster's ``all_deps_match``: some partition of each dependency matches), or is requested on
    this tick (then built first, in the same run): the first landing of a day requests that new day
    of fraud's features and of its scores together, not the scores on the tick after (a second
    fraud run, seen once a day in the freshness benchmark)."""
    A = dg.AutomationCondition
    return A.all_deps_match(~A.missing() | A.will_be_requested())


# Automation conditions are immutable: one instance per distinct condition serves every product
# (building ``eager()`` costs ~0.3 ms, which a mesh of thousands of products pays at every load).
@functools.cache
def _eager(catch_up: frozenset[tuple[dg.AssetKey, dg.AssetKey]] = frozenset(), foreign: frozenset[dg.AssetKey] = frozenset()) -> dg.AutomationCondition:
    """Dagster's ``eager``, counting other domains' updates since the asset was last requested (see
    :func:`automation_condition`), and not on an input whose latest build failed."""
    A = dg.AutomationCondition
    condition = (_inputs_updated(foreign, missing=True) & ~A.any_deps_missing() & ~A.any_deps_in_progress()
                 & ~A.in_progress() & ~A.any_deps_match(A.execution_failed()))
    if catch_up:
        condition = condition & _caught_up(catch_up, foreign)
    return condition.with_label("eager" + _catch_up_label(catch_up))


@functools.cache
def _on_cron(cron: str) -> dg.AutomationCondition:
    return dg.AutomationCondition.on_cron(cron)


def automation_sensor(domain: str, running: bool = False, run_tags: dict[str, str] | None = None, interval: int = 30) -> dg.AutomationConditionSensorDefinition:
    """The domain's automation sensor; ``running`` and ``interval`` come from the deployment's settings
    (``MESH_AUTOMATION``, ``MESH_AUTOMATION_INTERVAL``), ``run_tags`` from its quotas."""
    return dg.AutomationConditionSensorDefinition(
        f"{domain}_automation",
        target=dg.AssetSelection.groups(domain),
        run_tags=run_tags or {"mesh/domain": domain},
        minimum_interval_seconds=daemon_interval(interval),
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=f"Refreshes the {domain} domain's products from their SLAs and upstream updates.",
    )


def sla_schedule(domain: str, contracts: list[Contract], running: bool = False, run_tags: dict[str, str] | None = None) -> dg.ScheduleDefinition | None:
    """A source-aligned domain's schedule: its whole job, at the highest frequency its contracts promise.

    A domain of daily-partitioned products gets, at each tick, one run over the days the interval
    since the previous tick touched (usually today; just after midnight yesterday and today), within
    the partitions: a run with no day would fail every step that reads its day. A tick skips while
    a run of the domain is in flight, and when every product was published since the previous tick
    (a landing batch refreshed them: the SLA is met, and the tick would redo that run's work)."""
    from mesh_platform.products import partitions

    hours = [h for h in (c.sla_hours("frequency") for c in contracts) if h]
    if not hours:
        return None
    every = min(hours)
    cron = cron_for(every)
    tags = {**(run_tags or {"mesh/domain": domain}), "mesh/trigger": "sla_schedule"}
    name = f"{domain}_sla_schedule"
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    description = f"Refreshes the {domain} domain from its sources every {every:g} h (the shortest refresh frequency in its contracts' SLAs)."
    layouts = [layout for layout in (partitions.of(c) for c in contracts) if layout is not None]
    if not layouts:
        return dg.ScheduleDefinition(name=name, cron_schedule=cron, target=dg.AssetSelection.groups(domain), tags=tags,
                                     default_status=status, description=description)
    definition = layouts[0].definition

    @dg.schedule(name=name, cron_schedule=cron, target=dg.AssetSelection.groups(domain), default_status=status,
                 description=description + " Each tick is one run over the days since the previous tick.")
    def _tick(context: dg.ScheduleEvaluationContext):
        import datetime as dt

        now = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        busy = in_flight(context.instance, domain)
        if busy:
            # the domain's products are being refreshed already (a landing batch, automation, a backfill):
            # a second run over the same days would race it for the same ports and redo its work
            return dg.SkipReason(f"{busy} run(s) of {domain} in flight; they refresh its products")
        fresh = refreshed_since(context.instance, [dg.AssetKey([domain, c.name]) for c in contracts], now - dt.timedelta(hours=every), now)
        if fresh is not None:
            # the SLA promises a refresh every `every` hours, and a run (a landing batch) made one
            # since the previous tick: this tick would rebuild the same days from the same files
            return dg.SkipReason(f"every product of {domain} was published since {fresh:%Y-%m-%d %H:%M} UTC, within its {every:g} h refresh SLA")
        first, last = sla_days(definition, now, every)
        if first is None:
            return dg.SkipReason(f"no partition day between {now - dt.timedelta(hours=every):%Y-%m-%d %H:%M} and {now:%Y-%m-%d %H:%M}")
        return dg.RunRequest(run_key=f"{first}..{last}@{now.isoformat()}", tags={**tags, **partitions.range_tags(definition, first, last)})

    return _tick


def refreshed_since(instance: dg.DagsterInstance, keys: list[dg.AssetKey], since, now):
    """The time of the oldest of the latest publishes of ``keys`` when each was published in
    (``since``, ``now``], else None (one of them was not refreshed in the interval)."""
    import datetime as dt

    times = []
    for key in keys:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            return None
        at = dt.datetime.fromtimestamp(event.timestamp, tz=dt.timezone.utc)
        if not since < at <= now:
            return None
        times.append(at)
    return min(times) if times else None


def in_flight(instance: dg.DagsterInstance, domain: str) -> int:
    """Runs of ``domain`` queued or running (every run of a domain carries ``mesh/domain``)."""
    statuses = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    return len(instance.get_run_ids(dg.RunsFilter(tags={"mesh/domain": domain}, statuses=statuses), limit=10))


def sla_days(definition, now, every_hours: float) -> tuple[str | None, str | None]:
    """The partition days an SLA tick at ``now`` refreshes: from the day of the previous tick to
    today, clamped to the partitions that exist at ``now``."""
    import datetime as dt

    from mesh_platform.products.partitions import KEY_FORMAT

    keys = definition.get_partition_keys(current_time=now)
    if not keys:
        return None, None
    first = max((now - dt.timedelta(hours=every_hours)).strftime(KEY_FORMAT), keys[0])
    last = min(now.strftime(KEY_FORMAT), keys[-1])
    return (first, last) if first <= last else (None, None)
