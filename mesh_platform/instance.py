"""The local Dagster instance the embedded mesh runs on (``DAGSTER_HOME``).

Run monitoring is on: the daemon (started by ``dagster dev``) marks failed a run whose worker did
not start in time or died. Dagster's default local run launcher cannot tell whether a run worker is
alive, so :class:`LocalRunLauncher` adds that check (the worker's pid, which the worker itself
records in the run's event log, on this machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

from mesh_platform.settings import MeshSettings

# SQLite storage (Dagster's default when no storage is configured), a queued run coordinator so
# that `dagster dev` honours per-domain limits, and no telemetry. Production uses
# infra/dagster.yaml instead (Postgres).
MARKER = "# Written by `mesh`"
LOCAL_INSTANCE_YAML = """\
# Written by `mesh`; the embedded default instance (SQLite under this folder).
telemetry:
  enabled: false
# Runs print INFO and above on the console (`dagster dev`'s terminal); every event is still in the
# event log and the UI. Dagster's default (DEBUG) prints each step output and check on the console.
python_logs:
  python_log_level: INFO
run_launcher:
  module: mesh_platform.instance
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: mesh/domain
        value:
          applyLimitPerUniqueValue: true
        limit: 2
"""


def ensure_dagster_home(settings: MeshSettings | None = None) -> Path:
    settings = settings or MeshSettings.from_env()
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # written when missing, and rewritten when an older `mesh` wrote it (a user's own file is kept)
    if not config.exists() or (config.read_text().startswith(MARKER) and config.read_text() != LOCAL_INSTANCE_YAML):
        config.write_text(LOCAL_INSTANCE_YAML)
    return home


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run worker recorded when it started (its "Started process for run" event)."""
    for entry in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        event = entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            return int(pid.value)
    return None


def _alive(pid: int, run_id: str) -> bool:
    from mesh_platform.io.lake import pid_alive

    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                return False  # killed, not yet reaped by its parent
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return True  # no /proc here: trust the pid
    # a recycled pid belongs to another program; a run worker is a Python process of Dagster's
    return any(word in cmdline for word in (run_id.encode(), b"dagster", b"multiprocessing", b"python"))


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (a run worker process per run, on this machine) plus a health check.

    With it, run monitoring marks a run failed when its worker was killed (out of memory, SIGKILL,
    a crashed machine) instead of leaving it "started" forever.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = _worker_pid(self._instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run worker has not recorded its pid yet")
        if _alive(pid, run.run_id):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone (killed or crashed)")


def local_instance(settings: MeshSettings | None = None) -> dg.DagsterInstance:
    settings = settings or MeshSettings.from_env()
    ensure_dagster_home(settings)
    settings.export()
    return dg.DagsterInstance.get()
