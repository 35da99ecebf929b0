"""Materialize the whole mesh, or a selection of it, across code locations in dependency order.

Dagster runs one code location per run, so a mesh-wide refresh is a sequence of runs: each round
picks a domain whose selected assets have every selected upstream (in other domains) already done,
and runs those assets in one run of that domain. A failed run skips everything downstream of it
(nothing runs on data that was not published) and the command reports it.

Runs execute in this process against the Dagster instance at ``DAGSTER_HOME``, so they appear in
the Dagster UI's run list and asset pages like any other run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import dagster as dg

from mesh_platform import metadata as md

from mesh_platform.workspace import Mesh, children_in, parents_in, walk


class SelectionError(ValueError):
    pass


def select(mesh: Mesh, expression: str | None) -> set[dg.AssetKey]:
    """Resolve a selection: comma-separated ``domain``, ``domain/asset``, with ``*`` before
    (and upstream) or after (and downstream). Empty means every asset of the mesh."""
    graph = mesh.asset_graph()
    if not expression:
        return set(graph)
    children = children_in(graph)

    def closure(start: set[dg.AssetKey], edges: Callable[[dg.AssetKey], set[dg.AssetKey]]) -> set[dg.AssetKey]:
        return set(start) | {k for k in walk(start, edges, through=graph.__contains__) if k in graph}

    chosen: set[dg.AssetKey] = set()
    domains = {domain for domain, _ in graph.values()}
    for item in filter(None, (part.strip() for part in expression.split(","))):
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
        chosen |= keys
    return chosen


@dataclass
class RunOutcome:
    domain: str
    keys: list[dg.AssetKey]
    success: bool
    run_id: str
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class MaterializeReport:
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: list[dg.AssetKey] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    """Domains that could not load: nothing of theirs ran, and everything downstream was skipped."""

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs) and not self.skipped and not self.unloaded


def plan_rounds(graph: dict[dg.AssetKey, tuple[str, set[dg.AssetKey]]], pending: set[dg.AssetKey], domain_order: list[str]):
    """The next (domain, keys) batch that can run now, or None."""
    for domain in domain_order:
        batch = {k for k in pending if graph[k][0] == domain}
        changed = True
        while changed:  # drop keys waiting on a pending upstream outside the batch
            changed = False
            for key in list(batch):
                if any(p in pending and p not in batch for p in graph[key][1]):
                    batch.discard(key)
                    changed = True
        if batch:
            return domain, batch
    return None


def _first_error(result) -> str | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
    return None


def materialize(
    mesh: Mesh,
    keys: set[dg.AssetKey],
    instance: dg.DagsterInstance,
    progress: Callable[[str], None] = lambda _: None,
    log_level: str = "WARNING",
) -> MaterializeReport:
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
    while pending:
        nxt = plan_rounds(graph, pending, order)
        if nxt is None:  # pragma: no cover - only with a dependency cycle across domains
            report.skipped.extend(sorted(pending, key=str))
            progress(f"cannot order the remaining assets (cycle?): {', '.join(k.to_user_string() for k in pending)}")
            break
        domain, batch = nxt
        ordered = sorted(batch, key=lambda k: k.to_user_string())
        done = total - len(pending)
        progress(f"[{done + len(batch)}/{total}] {domain}: materializing {', '.join(k.path[-1] for k in ordered)}")
        defs = mesh.get(domain).defs
        started = time.perf_counter()
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=ordered,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={**mesh.get(domain).domain.run_tags(), md.LAUNCHED_BY: "mesh-materialize"},
        )
        outcome = RunOutcome(domain, ordered, result.success, result.run_id, time.perf_counter() - started)
        materialized = set()
        for event in result.get_asset_materialization_events():
            materialized.add(event.asset_key)
            rows = event.materialization.metadata.get("dagster/row_count")
            if rows is not None:
                outcome.rows[event.asset_key.to_user_string()] = int(rows.value)
        pending -= batch
        if not result.success:
            outcome.error = _first_error(result) or "run failed"
            failed = set(batch) - materialized
            downstream = {k for k in pending if _depends_on(graph, k, failed.__contains__)}
            pending -= downstream
            report.skipped.extend(sorted(downstream, key=str))
            progress(f"    FAILED in {outcome.seconds:.1f}s (run {result.run_id}): {outcome.error}")
            if downstream:
                progress(f"    skipping downstream: {', '.join(k.to_user_string() for k in sorted(downstream, key=str))}")
        else:
            rows = ", ".join(f"{k.split('/')[-1]} {n:,} rows" for k, n in outcome.rows.items())
            progress(f"    ok in {outcome.seconds:.1f}s (run {result.run_id[:8]}){': ' + rows if rows else ''}")
        report.runs.append(outcome)
        _emit_lineage(instance, result.run_id, progress)
    return report


def _emit_lineage(instance: dg.DagsterInstance, run_id: str, progress: Callable[[str], None]) -> None:
    """The run's OpenLineage events (see :mod:`mesh_platform.lineage`); a lineage failure never fails the mesh."""
    from mesh_platform.lineage.emit import emit_run

    try:
        emit_run(instance, run_id)
    except Exception as exc:
        progress(f"    warning: OpenLineage events of run {run_id} not sent: {exc}")


def _depends_on(graph, key: dg.AssetKey, failed: Callable[[dg.AssetKey], bool]) -> bool:
    """Whether ``key`` has an upstream (direct or not, external ones included) for which ``failed`` holds."""
    return any(failed(parent) for parent in walk([key], parents_in(graph)))
