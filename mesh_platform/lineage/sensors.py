"""Every domain's lineage sensors: OpenLineage events for each run Dagster launched in its code location.

Two run-status sensors per domain (``<domain>_lineage_complete`` on success,
``<domain>_lineage_fail`` on failure), running by default. When a run of the domain's code
location ends, the daemon evaluates them and they emit the run's START and COMPLETE (or FAIL)
events, built from the instance's event log (:func:`mesh_platform.lineage.emit.emit_run`), START
carrying the time the run really started.

Runs that ``mesh materialize`` executes in its own process are tagged
``mesh/launched_by=mesh-materialize`` and emit their events themselves; the sensors skip them, so
no run is reported twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from mesh_platform.foundations.settings import MeshSettings

MATERIALIZE_TAG = ("mesh/launched_by", "mesh-materialize")


def _emit(context, domain: str, settings: "MeshSettings") -> dg.SkipReason | None:
    run = context.dagster_run
    if run.tags.get(MATERIALIZE_TAG[0]) == MATERIALIZE_TAG[1]:
        return dg.SkipReason(f"run {run.run_id} was launched by `mesh materialize`, which emits its lineage itself")
    from mesh_platform.lineage.emit import emit_run

    try:
        events = emit_run(context.instance, run.run_id, settings)
    except Exception as exc:  # lineage never fails the mesh: say so, and go on
        context.log.warning(f"OpenLineage events of run {run.run_id} ({domain}) could not be sent: {exc}")
        return dg.SkipReason(f"lineage of run {run.run_id} not sent: {exc}")
    if not events:
        return dg.SkipReason("lineage is disabled (MESH_LINEAGE=off or OPENLINEAGE_DISABLED=true)")
    context.log.debug(f"sent {len(events)} OpenLineage event(s) for run {run.run_id}")  # debug: `mesh dev` runs at warning level
    return None


def lineage_sensors(domain: str, settings: "MeshSettings") -> list[dg.SensorDefinition]:
    """The domain's two run-status sensors; ``settings``: its code location's (the lake its events
    name, the home their default file is in)."""
    @dg.run_status_sensor(
        name=f"{domain}_lineage_complete",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends the OpenLineage events (START, COMPLETE) of every successful run of the {domain} domain.",
    )
    def complete(context: dg.RunStatusSensorContext):
        return _emit(context, domain, settings)

    @dg.run_failure_sensor(
        name=f"{domain}_lineage_fail",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends the OpenLineage events (START, FAIL) of every failed run of the {domain} domain.",
    )
    def fail(context: dg.RunFailureSensorContext):
        return _emit(context, domain, settings)

    return [complete, fail]
