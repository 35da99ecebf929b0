"""Materialize the whole mesh, or a selection of it, across code locations in dependency order.

Dagster runs one code location per run, so a mesh-wide refresh is a set of runs, each of one
domain: a run takes every selected asset of its domain whose selected upstreams in other domains
are done (published, or failed). A domain whose assets wait on different domains can therefore take
more than one run: when the runs go through the queue, claims' landed files start while policies
still runs, and claims/claims, which reads policies, follows in a second claims run; the demo's
whole mesh is 5 runs in this process (one at a time) and about 6 to 8 through the queue, by timing.
The progress lines count runs (``[run N] domain: ...``) and say how many of the selected assets
have started. A failed run skips everything downstream of it (nothing runs on data that was not
published) and the command reports it.

Two ways to execute a run (a :class:`Runner`):

- **through the instance** (the default of ``mesh materialize``; :mod:`mesh_platform.mesh.submission`):
  each run is created for the domain's code location and submitted to the instance's run queue,
  where the daemon launches it under the per-domain run limits, like a run started from the UI.
  Independent domains run at the same time. The runs carry their code location, so the UI can
  re-execute them, and their lineage events come from the lineage sensors.
- **in this process** (:class:`InProcessRunner`, ``mesh materialize --in-process``, tests and
  benchmarks): ``execute_in_process`` against the same instance, one run at a time, no daemon
  needed; the runs have no code location, and this process emits their lineage events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import dagster as dg

from mesh_platform.foundations import metadata as md

from mesh_platform.mesh.run_cleanup import process_tags
from mesh_platform.mesh.workspace import Mesh, children_in, parents_in, walk


class SelectionError(ValueError):
    pass


def partition_tags(mesh: Mesh, domain: str, keys: list[dg.AssetKey], days: tuple[str, str] | None) -> dict[str, str]:
    """The partition range tags of one domain's run: ``days`` (first, last), or, when None, every
    day of the partitioned assets among ``keys`` (a whole rebuild); no tags when none is partitioned.

    The range is one run (the assets' backfill policy is a single run), so a backfill of a year
    takes the same runs as one day, each replacing exactly those days of its ports."""
    graph = mesh.get(domain).defs.resolve_asset_graph()
    definitions = {graph.get(k).partitions_def for k in keys if graph.has(k) and graph.get(k).partitions_def is not None}
    if not definitions:
        return {}
    if len(definitions) > 1:
        raise SelectionError(f"{domain}: the selected assets are partitioned differently ({', '.join(map(str, definitions))}); select them separately")
    definition = definitions.pop()
    from mesh_platform.products.partitions import check_keys, range_tags

    if days is None:
        return range_tags(definition)
    check_keys(definition, days, f"{domain}: {', '.join(k.to_user_string() for k in keys if graph.get(k).partitions_def is not None)}")
    return range_tags(definition, *days)


def check_days(mesh: Mesh, keys: set[dg.AssetKey], days: tuple[str, str]) -> None:
    """Fail before any run when ``days`` are not partitions of the selected partitioned assets, or
    when no selected asset is partitioned at all (the option would be silently ignored)."""
    from mesh_platform.products.partitions import PartitionError, day

    if day(days[0]) > day(days[1]):
        raise SelectionError(f"--from {days[0]} is after --to {days[1]}")
    by_domain: dict[str, list[dg.AssetKey]] = {}
    for key in keys:
        by_domain.setdefault(key.path[0], []).append(key)
    partitioned = False
    for domain, domain_keys in by_domain.items():
        try:
            partitioned |= bool(partition_tags(mesh, domain, domain_keys, days))
        except PartitionError as exc:
            raise SelectionError(str(exc)) from None
    if not partitioned:
        raise SelectionError("none of the selected assets is partitioned; --partition/--from/--to apply to daily-partitioned products")


def select(mesh: Mesh, expression: str | None) -> set[dg.AssetKey]:
    """Resolve a selection: comma-separated ``domain``, ``domain/asset``, with ``*`` before
    (and upstream) or after (and downstream); an item starting with ``-`` takes its assets out of
    the rest (``claims*,-fraud/fraud_model``: a new day as automation runs it, without retraining
    the model). Empty means every asset of the mesh."""
    graph = mesh.asset_graph()
    if not expression:
        return set(graph)
    children = children_in(graph)

    def closure(start: set[dg.AssetKey], edges: Callable[[dg.AssetKey], set[dg.AssetKey]]) -> set[dg.AssetKey]:
        return set(start) | {k for k in walk(start, edges, through=graph.__contains__) if k in graph}

    chosen: set[dg.AssetKey] = set()
    excluded: set[dg.AssetKey] = set()
    domains = {domain for domain, _ in graph.values()}
    for item in filter(None, (part.strip() for part in expression.split(","))):
        into = chosen
        if item.startswith("-"):
            item, into = item[1:].strip(), excluded
        up, down = item.startswith("*"), item.endswith("*")
        name = item.strip("*")
        if "/" in name:
            keys = {dg.AssetKey(name.split("/"))}
        elif name in domains:
            keys = {k for k, (d, _) in graph.items() if d == name}
        else:
            keys = set()
        keys &= set(graph)
        if not keys:
            unloaded = {d.entry.location for d in mesh.domains if not d.ok}
            if name.split("/")[0] in unloaded:
                raise SelectionError(f"{item!r}: domain {name.split('/')[0]!r} could not load (see the errors above); fix it first")
            raise SelectionError(f"{item!r} matches no domain or asset of the mesh (use `domain` or `domain/asset`)")
        if up:
            keys = closure(keys, parents_in(graph))
        if down:
            keys = closure(keys, children)
        into |= keys
    if excluded and not chosen:
        chosen = set(graph)  # only exclusions: everything else
    return chosen - excluded


@dataclass
class RunOutcome:
    domain: str
    keys: list[dg.AssetKey]
    success: bool
    run_id: str
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    materialized: set[dg.AssetKey] = field(default_factory=set)


@dataclass
class MaterializeReport:
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: list[dg.AssetKey] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    """Domains that could not load: nothing of theirs ran, and everything downstream was skipped."""

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs) and not self.skipped and not self.unloaded


class Runner(Protocol):
    """Executes the run of one domain's batch of assets; see the module docstring."""

    parallel: bool
    """Whether several domains' runs may be in flight at once."""

    def start(self, domain: str, keys: list[dg.AssetKey], tags: dict[str, str]) -> str:
        """Start (or queue) the run; its run id."""

    def wait_any(self, run_ids: set[str]) -> RunOutcome:
        """Block until one of ``run_ids`` has finished; its outcome."""


def ready_batches(
    graph: dict[dg.AssetKey, tuple[str, set[dg.AssetKey]]],
    pending: set[dg.AssetKey],
    domain_order: list[str],
    running: set[dg.AssetKey] = frozenset(),
    busy: set[str] = frozenset(),
) -> list[tuple[str, set[dg.AssetKey]]]:
    """Every (domain, keys) batch that can start now, in domain order.

    A key is ready when none of its upstreams is still pending outside its own batch or running.
    A domain with a run in flight (``busy``) waits for it: its next batch may depend on it.
    """
    waiting = pending | running
    batches = []
    for domain in domain_order:
        if domain in busy:
            continue
        batch = {k for k in pending if graph[k][0] == domain}
        changed = True
        while changed:  # drop keys waiting on an upstream outside the batch
            changed = False
            for key in list(batch):
                if any(p in waiting and p not in batch for p in graph[key][1]):
                    batch.discard(key)
                    changed = True
        if batch:
            batches.append((domain, batch))
    return batches


def first_step_error(events) -> str | None:
    """``step: message`` of the first step failure among Dagster events."""
    for event in events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            message = error.message.strip()
            # Dagster wraps what an IO manager raised ("Error occurred while loading input ...");
            # the platform's own message (an access, quota or contract refusal) is the cause
            while error.cause is not None and error.message.startswith("dagster._core.errors."):
                error = error.cause
                message += " " + error.message.strip()
            return f"{event.step_key}: {message}"
    return None


def rows_of(materializations) -> dict[str, int]:
    """``dagster/row_count`` of each asset materialization event, by asset key."""
    rows = {}
    for event in materializations:
        count = event.materialization.metadata.get("dagster/row_count")
        if count is not None:
            rows[event.asset_key.to_user_string()] = int(count.value)
    return rows


class InProcessRunner:
    """Each run executes in this process (``execute_in_process``), one at a time."""

    parallel = False

    def __init__(self, mesh: Mesh, instance: dg.DagsterInstance, log_level: str = "WARNING",
                 progress: Callable[[str], None] = lambda _: None):
        self.mesh, self.instance, self.log_level, self.progress = mesh, instance, log_level, progress
        self._done: dict[str, RunOutcome] = {}
        self._warmed: set[str] = set()

    def start(self, domain: str, keys: list[dg.AssetKey], tags: dict[str, str]) -> str:
        self._warm(domain)
        started = time.perf_counter()
        result = self.mesh.get(domain).defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=self.instance,
            asset_selection=keys,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": self.log_level}}}},
            tags={**tags, md.LAUNCHED_BY: "mesh-materialize", **process_tags()},
        )
        materializations = result.get_asset_materialization_events()
        outcome = RunOutcome(domain, keys, result.success, result.run_id, time.perf_counter() - started,
                             rows=rows_of(materializations), materialized={e.asset_key for e in materializations})
        if not result.success:
            outcome.error = first_step_error(result.all_events) or "run failed"
        _emit_lineage(self.instance, result.run_id, self.progress, self.mesh.get(domain).domain.settings)
        self._done[result.run_id] = outcome
        return result.run_id

    def wait_any(self, run_ids: set[str]) -> RunOutcome:
        return self._done.pop(next(iter(run_ids)))

    def _warm(self, domain: str) -> None:
        """Import the libraries the domain's steps import lazily (dbt, Delta Lake, scikit-learn ...)
        and work out what every run would again (a dbt domain's column lineage) before its first
        run, as a deployed code server does for its runs (:mod:`mesh_platform.deployment.run_preload`):
        a run's time is its work, not Python importing libraries once per process. Then what is
        loaded is frozen out of the garbage collector's sight (:func:`run_preload.settle`), as the
        code server's preload does. What fails here, the run does again and reports itself."""
        import sys

        from mesh_platform.deployment import run_preload

        module = sys.modules.get(self.mesh.get(domain).entry.module)
        if module is None or module.__name__ in self._warmed:
            return
        self._warmed.add(module.__name__)
        run_preload.warm(module)
        run_preload.settle()


def materialize(
    mesh: Mesh,
    keys: set[dg.AssetKey],
    instance: dg.DagsterInstance,
    progress: Callable[[str], None] = lambda _: None,
    log_level: str = "WARNING",
    runner: Runner | None = None,
    days: tuple[str, str] | None = None,
    stop=None,
) -> MaterializeReport:
    """Run ``keys`` across the mesh's code locations in dependency order (in this process by default).

    ``days`` (first, last partition keys): the partitioned assets materialize those days only
    (a backfill); the unpartitioned ones in the same runs are rebuilt whole. Without it, the
    partitioned assets materialize every day. ``stop`` (a ``threading.Event``): once set, no
    further run starts (the CLI sets it on SIGTERM/SIGINT)."""
    runner = runner or InProcessRunner(mesh, instance, log_level, progress)
    graph = mesh.asset_graph()
    order = [d.entry.location for d in mesh.domains if d.ok]
    pending = set(keys)
    report = MaterializeReport(unloaded=sorted(d.entry.location for d in mesh.domains if not d.ok))
    if report.unloaded:
        # Upstream data of a domain that could not load is whatever it last published: stale, maybe
        # from an older contract. Nothing downstream of it runs, and each such asset counts as skipped.
        unloaded = set(report.unloaded)
        stale = {k for k in pending if _depends_on(graph, k, lambda parent: parent.path[0] in unloaded)}
        pending -= stale
        report.skipped.extend(sorted(stale, key=str))
        for domain in report.unloaded:
            progress(f"domain {domain} could not load: skipping everything downstream of it")
        if stale:
            progress(f"    skipped: {', '.join(k.to_user_string() for k in sorted(stale, key=str))}")
    total = len(pending)
    started = launched = 0
    in_flight: dict[str, tuple[str, set[dg.AssetKey]]] = {}  # run id -> (domain, keys)
    while pending or in_flight:
        running = set().union(*(keys for _, keys in in_flight.values()))
        busy = {domain for domain, _ in in_flight.values()}
        batches = ready_batches(graph, pending, order, running, busy)
        if not runner.parallel and in_flight:
            batches = []
        if stop is not None and stop.is_set():
            batches = []
            if not in_flight:
                report.skipped.extend(sorted(pending, key=str))
                break
        for domain, batch in batches[: None if runner.parallel else 1]:
            ordered = sorted(batch, key=lambda k: k.to_user_string())
            started += len(batch)
            launched += 1
            progress(f"[run {launched}] {domain}: materializing {', '.join(k.path[-1] for k in ordered)} ({started} of {total} assets started)")
            pending -= batch
            run_id = runner.start(domain, ordered, {**mesh.get(domain).domain.run_tags(), **partition_tags(mesh, domain, ordered, days)})
            in_flight[run_id] = (domain, batch)
        if not in_flight:  # pragma: no cover - only with a dependency cycle across domains
            report.skipped.extend(sorted(pending, key=str))
            progress(f"cannot order the remaining assets (cycle?): {', '.join(k.to_user_string() for k in pending)}")
            break
        outcome = runner.wait_any(set(in_flight))
        domain, batch = in_flight.pop(outcome.run_id)
        if not outcome.success:
            failed = set(batch) - outcome.materialized
            downstream = {k for k in pending if _depends_on(graph, k, failed.__contains__)}
            pending -= downstream
            report.skipped.extend(sorted(downstream, key=str))
            progress(f"    {domain}: FAILED in {outcome.seconds:.1f}s (run {outcome.run_id}): {outcome.error}")
            if downstream:
                progress(f"    skipping downstream: {', '.join(k.to_user_string() for k in sorted(downstream, key=str))}")
        else:
            rows = ", ".join(f"{k.split('/')[-1]} {n:,} rows" for k, n in outcome.rows.items())
            progress(f"    {domain}: ok in {outcome.seconds:.1f}s (run {outcome.run_id[:8]}){': ' + rows if rows else ''}")
        report.runs.append(outcome)
    return report


def _emit_lineage(instance: dg.DagsterInstance, run_id: str, progress: Callable[[str], None], settings) -> None:
    """The run's OpenLineage events (see :mod:`mesh_platform.lineage`), with the settings of the code
    location that ran it; a lineage failure never fails the mesh."""
    from mesh_platform.lineage.emit import emit_run

    try:
        emit_run(instance, run_id, settings)
    except Exception as exc:
        progress(f"    warning: OpenLineage events of run {run_id} not sent: {exc}")


def _depends_on(graph, key: dg.AssetKey, failed: Callable[[dg.AssetKey], bool]) -> bool:
    """Whether ``key`` has an upstream (direct or not, external ones included) for which ``failed`` holds."""
    return any(failed(parent) for parent in walk([key], parents_in(graph)))
