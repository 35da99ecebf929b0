"""Resources for source-aligned domains: reading the operational systems the mesh starts from.

The defaults point at the seeded simulators under ``MESH_SOURCES`` (see
:mod:`mesh_platform.simulation`); production overrides them with environment variables, e.g.
``POLICY_ADMIN_DB_URL=postgresql://...`` (any SQLAlchemy URL).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd

from mesh_platform.settings import MeshSettings
from mesh_platform.simulation import SourceLayout


def _layout() -> SourceLayout:
    return SourceLayout(Path(MeshSettings.from_env().sources))


class SqlDatabase(dg.ConfigurableResource):
    """An operational relational database, read with SQL through SQLAlchemy."""

    url: str

    def query(self, sql: str) -> pd.DataFrame:
        import sqlalchemy as sa

        if self.url.startswith("sqlite:///") and not Path(self.url.removeprefix("sqlite:///")).exists():
            raise FileNotFoundError(f"operational database {self.url} does not exist; run `mesh simulate` first")
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as con:
                return pd.read_sql(sa.text(sql), con)
        finally:
            engine.dispose()

    @classmethod
    def policy_admin(cls) -> "SqlDatabase":
        default = "sqlite:///" + str(_layout().policy_db)
        return cls(url=os.environ.get("POLICY_ADMIN_DB_URL", default))


class LandingZone(dg.ConfigurableResource):
    """A folder where an upstream system drops files (local path; the sensor watches it)."""

    path: str

    def files(self, pattern: str) -> list[Path]:
        folder = Path(self.path)
        return sorted(folder.glob(pattern)) if folder.is_dir() else []

    @classmethod
    def claims(cls) -> "LandingZone":
        return cls(path=os.environ.get("CLAIMS_LANDING_DIR", str(_layout().claims_landing)))

    @classmethod
    def support_chat(cls) -> "LandingZone":
        return cls(path=os.environ.get("SUPPORT_CHAT_EXPORT_DIR", str(_layout().chat_export.parent)))
