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
        """Read once per process entry point (``Domain.definitions``, the ``mesh`` command) and passed down."""
        env = os.environ if environ is None else environ
        names = ("MESH_HOME", "MESH_LAKE", "MESH_SOURCES", "DAGSTER_HOME", "MESH_QUALITY_REPORTS", "MESH_AUTOMATION", "MESH_AUTOMATION_INTERVAL", "MESH_EXECUTOR")
        return _settings(tuple(env.get(n) or "" for n in names), os.getcwd())

    def export(self) -> None:
        """Pin every path in this process's environment (inherited by child processes)."""
        os.environ["MESH_HOME"] = self.home
        os.environ["MESH_LAKE"] = self.lake
        os.environ["MESH_SOURCES"] = self.sources
        os.environ["DAGSTER_HOME"] = self.dagster_home


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
