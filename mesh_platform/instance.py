"""The local Dagster instance the embedded mesh runs on (``DAGSTER_HOME``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mesh_platform.settings import MeshSettings

# SQLite storage (Dagster's default when no storage is configured), a queued run coordinator so
# that `dagster dev` honours per-domain limits, and no telemetry. Production uses
# infra/dagster.yaml instead (Postgres).
LOCAL_INSTANCE_YAML = """\
# Written by `mesh`; the embedded default instance (SQLite under this folder).
telemetry:
  enabled: false
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
    if not config.exists():
        config.write_text(LOCAL_INSTANCE_YAML)
    return home


def local_instance(settings: MeshSettings | None = None) -> dg.DagsterInstance:
    settings = settings or MeshSettings.from_env()
    ensure_dagster_home(settings)
    settings.export()
    return dg.DagsterInstance.get()
