"""The local Dagster instance the embedded mesh runs on (``DAGSTER_HOME``).

Run monitoring is on: the daemon (started by ``dagster dev``) marks failed a run whose worker did
not start in time or died. Dagster's default local run launcher cannot tell whether a run worker is
alive, so :class:`LocalRunLauncher` adds that check (the worker's pid, which the worker itself
records in the run's event log, on this machine).
"""

from __future__ import annotations

import logging

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

from mesh_platform.foundations.settings import MeshSettings

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
  module: mesh_platform.mesh.instance
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
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: mesh/domain
        value:
          applyLimitPerUniqueValue: true
        limit: 2
"""


def domain_quotas() -> dict:
    """Each domain of the mesh (a folder with a ``domain.yaml``) with its quotas; empty outside a project."""
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.governance.quotas import domain_limits

    root = default_domains_root()
    names = sorted(p.parent.name for p in root.glob("*/domain.yaml")) if root.is_dir() else []
    return domain_limits(root, names)


def instance_yaml(quotas: dict | None = None) -> str:
    """The local instance's configuration, with each domain's run-queue limit (quota ``concurrent_runs``).

    Without quotas (outside a project) one rule limits every ``mesh/domain`` value alike. With them,
    one rule per domain: Dagster applies every matching rule, so a shared rule would cap a domain
    whose own quota is higher. The file is rewritten by every ``mesh`` command, so a domain added
    since is listed the next time.
    """
    if not quotas:
        return LOCAL_INSTANCE_YAML
    head = LOCAL_INSTANCE_YAML.split("      - key: mesh/domain", 1)[0]
    rules = [f"      - key: mesh/domain\n        value: {name}\n        limit: {q['concurrent_runs']}" for name, q in sorted(quotas.items())]
    return head + "\n".join(rules) + "\n"


def ensure_dagster_home(settings: MeshSettings, quotas: dict | None = None) -> Path:
    """The Dagster home of ``settings`` (the entry point's), with its ``dagster.yaml`` written."""
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = instance_yaml(quotas)
    # written when missing, and rewritten when `mesh` wrote it for other quotas or an older version
    # (a user's own file is kept)
    if not config.exists() or (config.read_text().startswith(MARKER) and config.read_text() != wanted):
        config.write_text(wanted)
    return home


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid the run worker recorded when it started (its "Started process for run" event), and when."""
    # The first such event is the run worker's; later ones name the processes it starts for its
    # steps (multiprocess executor), which can outlive a killed worker and must not stand for it.
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit() and "Started process for run" in (event.message or ""):
            return int(pid.value), entry.timestamp
    return None


def _started_at(stat: bytes) -> float | None:
    """When the process of a ``/proc/<pid>/stat`` line started (epoch seconds), from boot time and clock ticks."""
    try:
        ticks = int(stat.rsplit(b")", 1)[-1].split()[19])  # field 22, counted after "pid (comm)"
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int, recorded_at: float) -> bool:
    """Whether the worker that recorded ``pid`` at ``recorded_at`` still runs.

    Pids are recycled (32,768 of them by default, soon used up by a busy machine), so a live pid
    is the worker only if its process started before the worker recorded it.
    """
    from mesh_platform.storage.lake import pid_alive

    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True  # no /proc here: trust the pid
    if stat.rsplit(b")", 1)[-1].split()[0] == b"Z":
        return False  # killed, not yet reaped by its parent
    started = _started_at(stat)
    # a process started after the worker wrote its pid is another program that got the same pid
    # (one second of slack: boot time and clock ticks are coarse)
    return started is None or started <= recorded_at + 1.0


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (a run worker process per run, on this machine) plus a health check.

    With it, run monitoring marks a run failed when its worker was killed (out of memory, SIGKILL,
    a crashed machine) instead of leaving it "started" forever.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        recorded = _worker_pid(self._instance, run.run_id)
        if recorded is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run worker has not recorded its pid yet")
        pid, recorded_at = recorded
        if _alive(pid, recorded_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone (killed or crashed)")


def local_instance(settings: MeshSettings) -> dg.DagsterInstance:
    """The local instance of ``settings`` (the entry point's), configured with every domain's quotas:
    run-queue limits in ``dagster.yaml``, and each domain's concurrency pool (named after it) set to
    its ``pool_slots``."""
    quotas = domain_quotas()
    ensure_dagster_home(settings, quotas)
    settings.export()
    instance = dg.DagsterInstance.get()
    set_pool_slots(instance, quotas)
    # runs a killed `mesh materialize --in-process` left behind: failed, their pool slots freed
    from mesh_platform.mesh.run_cleanup import reap_dead_runs

    for run_id in reap_dead_runs(instance):
        logging.getLogger("mesh").warning("run %s: its process died; marked failed and its pool slots freed", run_id)
    return instance


def set_pool_slots(instance: dg.DagsterInstance, quotas: dict) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    for name, q in quotas.items():
        current = storage.get_concurrency_info(name)
        if current.slot_count != q["pool_slots"]:
            storage.set_concurrency_slots(name, q["pool_slots"])
