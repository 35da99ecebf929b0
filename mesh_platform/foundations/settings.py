"""Where the mesh keeps its state, read from the environment.

Switching from the embedded default to production is configuration, never code:

| variable       | default                     | production example                    |
| -------------- | --------------------------- | ------------------------------------- |
| `MESH_HOME`    | `./.mesh` (current folder)  | unused                                |
| `MESH_LAKE`    | `$MESH_HOME/lake`           | `s3://acme-mesh/lake`                 |
| `MESH_SOURCES` | `$MESH_HOME/sources`        | where the operational simulators live |
| `DAGSTER_HOME` | `$MESH_HOME/dagster_home`   | the Postgres-backed instance's folder |
| `MESH_AUTOMATION` | `off`                    | `on`: automation sensors start running |
| `MESH_QUALITY_REPORTS` | `1`                 | `0`: no Data Docs page per publish    |

`MESH_HOME` is made absolute once, so that code servers started by `dagster dev` (which may run
in another working directory) agree with the `mesh` command line on every path.

Where settings are chosen: once per entry point, never below it.

- the `mesh` command line: `command_settings()` in `mesh_platform/cli/common.py`, once per command, pinned for the
  processes the command starts (`MeshSettings.export`);
- a code location (a code server or a run worker importing a domain's module): `Domain.settings`,
  read once per domain and used by `Domain.definitions()` and the domain's source resources;
- the privacy release service (`python -m mesh_platform.deployment.privacy_service`): its `main()`.

Everything below them receives the settings (or the one path it needs: the lake, the home) as an
argument: `build_asset(plan, settings)`, the IO manager's configured `lake` and `home`, the
sensors' closures, `local_instance(settings)`, `emit_run(instance, run_id, settings)`,
`SqlDatabase.policy_admin(settings)`. No platform module reads `MESH_HOME`, `MESH_LAKE`,
`MESH_SOURCES` or `DAGSTER_HOME` itself, so one process can hold two meshes (two `MeshSettings`
with different homes, e.g. `MeshSettings.from_env(environ={"MESH_HOME": ...})`).
Per-process secrets and switches stay in the environment where they are read:
`MESH_MASKING_KEY`, `MESH_PRIVACY_SERVICE` / `MESH_PRIVACY_TOKEN`, `MESH_PRIVACY_LEDGER`,
`MESH_SEARCH_INDEX`, `MESH_LINEAGE_FILE`, `OPENLINEAGE_*`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _absolute(path: str) -> str:
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class MeshSettings:
    home: str
    lake: str
    sources: str
    dagster_home: str
    quality_reports: bool = True
    """``MESH_QUALITY_REPORTS=0`` skips writing the GX Data Docs page per publish (benchmarks)."""
    automation: bool = False
    """``MESH_AUTOMATION=on`` starts each domain's automation sensor and SLA schedule (production); stopped by default."""
    automation_interval: int = 30
    """``MESH_AUTOMATION_INTERVAL``: seconds between two evaluations of a domain's automation sensor."""
    executor: str = ""
    """``MESH_EXECUTOR=in_process``: a run's steps share its process (``mesh stack up`` on one machine)."""

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> "MeshSettings":
        """Read once per entry point (the ``mesh`` command, ``Domain.settings`` of a code location, the
        privacy service) and passed down; ``environ``: a mapping to read instead of the process's."""
        env = os.environ if environ is None else environ
        names = ("MESH_HOME", "MESH_LAKE", "MESH_SOURCES", "DAGSTER_HOME", "MESH_QUALITY_REPORTS", "MESH_AUTOMATION", "MESH_AUTOMATION_INTERVAL", "MESH_EXECUTOR")
        return _settings(tuple(env.get(n) or "" for n in names), os.getcwd())

    def export(self) -> None:
        """Pin every path in this process's environment (inherited by child processes)."""
        os.environ["MESH_HOME"] = self.home
        os.environ["MESH_LAKE"] = self.lake
        os.environ["MESH_SOURCES"] = self.sources
        os.environ["DAGSTER_HOME"] = self.dagster_home


def daemon_interval(seconds: int) -> int:
    """The ``minimum_interval_seconds`` that makes Dagster's daemon tick a sensor every ``seconds``.

    The daemon passes over its sensors every 5 s and skips one whose minimum interval has not fully
    elapsed since its previous tick started; a tick that started a moment late (the previous pass
    took a little longer) then waits a whole extra pass, so a 5-s setting ticked 5 or 10 s apart.
    One second of slack keeps the ticks on the setting (``MESH_AUTOMATION_INTERVAL``,
    ``MESH_SENSOR_INTERVAL``)."""
    return max(1, int(seconds) - 1)


PLANNED_PER_RUN = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
"""Dagster's switch for what a run over a range of days records when it is created: ``true``, one
"materialization planned" event per asset for the whole range; unset or ``false`` (Dagster's
default), one per asset and day."""


def planned_per_run(automation: bool) -> str:
    """The value of :data:`PLANNED_PER_RUN` for the processes that create runs.

    Wherever automation runs, ``false``: Dagster tells which days of an asset are in progress or
    failed only from per-day planned events. With one event per range, a landing run still building
    ``claims/claims`` counted as not in progress, and a mart reading claims started on the claim
    events the same run had just published (an extra analytics run in a third of the landings);
    a failed range run marked no day failed. Automation is off on the embedded default, where each
    event is its own SQLite transaction and a 212-day rebuild of the demo paid about 20 s for the
    per-day events: there ``true`` (``mesh_platform/__init__.py``, ``docs/partitions.md``)."""
    return "false" if automation else "true"


def home_ledger(home: str) -> str:
    """The privacy ledger kept in a mesh home (SQLite), unless ``MESH_PRIVACY_LEDGER`` names another."""
    return f"sqlite:///{Path(home) / 'privacy_ledger.sqlite'}"


@lru_cache(maxsize=32)
def _settings(values: tuple[str, ...], _cwd: str) -> MeshSettings:
    home_v, lake_v, sources_v, dagster_v, reports_v, automation_v, interval_v, executor_v = values
    home = _absolute(home_v or ".mesh")
    return MeshSettings(
        home=home,
        lake=_absolute(lake_v or os.path.join(home, "lake")),
        sources=_absolute(sources_v or os.path.join(home, "sources")),
        dagster_home=_absolute(dagster_v or os.path.join(home, "dagster_home")),
        quality_reports=(reports_v or "1") != "0",
        automation=automation_v.lower() in ("on", "1", "true", "running"),
        automation_interval=int(interval_v) if interval_v.strip().isdigit() else 30,
        executor=executor_v.strip(),
    )
