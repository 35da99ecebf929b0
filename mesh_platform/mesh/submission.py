"""Runs submitted through the Dagster instance, for the code location of their domain.

``mesh materialize`` (by default) creates each run the way the UI's *Materialize* button does: the
domain's code location (from the workspace the daemon reads) builds the execution plan of the
selected assets and their checks, the run is created with that location's origin, and
``instance.submit_run`` hands it to the instance's run coordinator. With the queued coordinator
(the local instance and ``infra/dagster.yaml``), the daemon launches it when the run queue and the
domain's quota allow; so runs from the command line wait behind the same limits as every other run,
show their code location in the UI, and can be re-executed from there.

The daemon must be running (``mesh dev`` or ``mesh stack up`` start one); without it a queued run
would wait forever, so :func:`check_daemon` refuses before anything is created.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.mesh.materialize import RunOutcome, first_step_error, rows_of

LAUNCHED_BY = "mesh-materialize-queued"
"""``mesh/launched_by`` of runs submitted by ``mesh materialize``; their lineage comes from the sensors."""

ASSET_JOB = "__ASSET_JOB"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


class SubmissionError(RuntimeError):
    """The runs cannot go through the instance (no daemon, a domain missing from the workspace, ...)."""


def needs_daemon(instance: dg.DagsterInstance) -> bool:
    """Whether submitted runs wait for the daemon: the queued run coordinator, as configured here."""
    from dagster._core.run_coordinator import QueuedRunCoordinator

    return isinstance(instance.run_coordinator, QueuedRunCoordinator)


def check_daemon(instance: dg.DagsterInstance, grace: float = 15.0) -> None:
    """Refuse when the instance queues runs and no ``dagster-daemon`` reports in within ``grace``
    seconds (a daemon started a moment ago has not written its first heartbeat yet)."""
    if not needs_daemon(instance):
        return
    from dagster._daemon.controller import get_daemon_statuses

    deadline = time.monotonic() + grace
    while not get_daemon_statuses(instance, ["QUEUED_RUN_COORDINATOR"], ignore_errors=True)["QUEUED_RUN_COORDINATOR"].healthy:
        if time.monotonic() > deadline:
            raise SubmissionError(
                f"no dagster-daemon is running for the Dagster instance at {instance.root_directory}: runs submitted "
                "to its queue would never start. Start the mesh (`mesh dev`, or `mesh stack up`) in another shell, "
                "or run in this process with `mesh materialize --in-process`"
            )
        time.sleep(1.0)


def workspace_file(settings, project_workspace: Path) -> Path:
    """The workspace the daemon of ``settings.dagster_home`` reads: the local production stack's
    gRPC workspace when DAGSTER_HOME is the stack's, else the project's ``workspace.yaml``."""
    from mesh_platform.deployment.stack.layout import StackLayout

    layout = StackLayout.of(settings)
    if Path(settings.dagster_home).resolve() == layout.dagster_home.resolve() and layout.workspace.exists():
        return layout.workspace
    return project_workspace


class QueuedRunner:
    """Creates each run for its domain's code location and submits it to the instance's run queue.

    Use as a context manager: it holds the workspace (for ``python_module`` entries, one gRPC code
    server per domain, started the way ``dagster dev`` starts them) until every run is submitted.
    """

    parallel = True

    def __init__(self, instance: dg.DagsterInstance, workspace: Path, progress: Callable[[str], None] = lambda _: None,
                 timeout: float = 3600.0, poll: float = 1.0):
        self.instance, self.workspace, self.progress = instance, workspace, progress
        self.timeout, self.poll = timeout, poll
        self._stack = ExitStack()
        self._context = None
        self._started: dict[str, tuple[str, list[dg.AssetKey], float]] = {}
        self._status: dict[str, dg.DagsterRunStatus] = {}

    def __enter__(self) -> "QueuedRunner":
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        self._context = self._stack.enter_context(
            WorkspaceProcessContext(self.instance, WorkspaceFileTarget(paths=[str(self.workspace)]), code_server_log_level="WARNING")
        )
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def start(self, domain: str, keys: list[dg.AssetKey], tags: dict[str, str]) -> str:
        from dagster._core.definitions.selector import JobSubsetSelector

        request = self._context.create_request_context()
        if not request.has_code_location(domain):
            error = request.get_code_location_error(domain) if domain in request.get_code_location_entries() else None
            detail = f": {error.message.strip().splitlines()[-1]}" if error else f" (not in {self.workspace})"
            raise SubmissionError(f"code location {domain!r} is not loaded in the workspace{detail}")
        location = request.get_code_location(domain)
        repository = next(iter(location.get_repositories().values()))
        selector = JobSubsetSelector(
            location_name=domain,
            repository_name=repository.name,
            job_name=ASSET_JOB,
            op_selection=None,
            asset_selection=set(keys),
            asset_check_selection=None,  # every check of the selected assets, as the UI does
        )
        job = location.get_job(selector)
        plan = location.get_execution_plan(job, {}, step_keys_to_execute=None, known_state=None, instance=self.instance)
        run = self.instance.create_run(
            job_name=job.name,
            run_id=None,
            run_config={},
            resolved_op_selection=None,
            step_keys_to_execute=None,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **tags, md.LAUNCHED_BY: LAUNCHED_BY},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=frozenset(keys),
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        self.instance.submit_run(run.run_id, request)
        self._started[run.run_id] = (domain, keys, time.monotonic())
        self.progress(f"    {domain}: run {run.run_id[:8]} queued (code location {domain})")
        return run.run_id

    def wait_any(self, run_ids: set[str]) -> RunOutcome:
        """Poll the instance until one of ``run_ids`` has finished (bounded by ``timeout`` per run)."""
        while True:
            for run_id in sorted(run_ids):
                run = self.instance.get_run_by_id(run_id)
                domain, keys, since = self._started[run_id]
                if run.status != self._status.get(run_id):
                    self._status[run_id] = run.status
                    if run.status == dg.DagsterRunStatus.STARTED:
                        self.progress(f"    {domain}: run {run_id[:8]} started")
                if run.status in FINISHED:
                    return self._outcome(run, domain, keys, time.monotonic() - since)
                if time.monotonic() - since > self.timeout:
                    return RunOutcome(domain, keys, False, run_id, time.monotonic() - since,
                                      error=f"still {run.status.value.lower()} after {self.timeout:.0f}s; "
                                            "it goes on in the instance (see the UI), nothing downstream was started")
            time.sleep(self.poll)

    def _outcome(self, run, domain: str, keys: list[dg.AssetKey], seconds: float) -> RunOutcome:
        records = self.instance.all_logs(run.run_id)
        events = [r.dagster_event for r in records if r.dagster_event is not None]
        materializations = [e for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
        outcome = RunOutcome(domain, keys, run.status == dg.DagsterRunStatus.SUCCESS, run.run_id, seconds,
                             rows=rows_of(materializations), materialized={e.asset_key for e in materializations})
        if not outcome.success:
            failure = next((e.message for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE), None)
            outcome.error = first_step_error(events) or failure or f"run {run.status.value.lower()}"
        return outcome
