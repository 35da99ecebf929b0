"""Resources for source-aligned domains: reading the operational systems the mesh starts from.

The defaults point at the seeded simulators under ``MESH_SOURCES`` (see
:mod:`mesh_platform.simulation`); production overrides them with environment variables, e.g.
``POLICY_ADMIN_DB_URL=postgresql://...`` (any SQLAlchemy URL).
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable

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


class LandingZoneError(RuntimeError):
    """The landing zone cannot be read (missing bucket or credentials): the message names it."""


@dataclass(frozen=True)
class LandedFile:
    """One file an upstream system dropped: a local path or an S3 object, read the same way."""

    name: str
    uri: str
    etag: str = ""
    _open: Callable[[], IO[bytes]] | None = field(default=None, compare=False, repr=False)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    def open(self) -> IO[bytes]:
        return self._open()


class LandingZone(dg.ConfigurableResource):
    """Where an upstream system drops files: a local folder (the embedded default) or an S3 prefix.

    ``path`` is a folder, or ``s3://bucket/prefix``: then the bucket is listed and read through
    dagster-aws's :class:`~dagster_aws.s3.S3Resource` (credentials and endpoint from the standard
    AWS environment, e.g. ``AWS_ENDPOINT_URL_S3``).
    """

    path: str

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    def files(self, pattern: str) -> list[Path]:
        """Local files matching ``pattern`` (the embedded default; see :meth:`landed` for both backends)."""
        folder = Path(self.path)
        return sorted(folder.glob(pattern)) if folder.is_dir() else []

    def landed(self, pattern: str) -> list[LandedFile]:
        """Every file matching ``pattern`` (a glob on the file name), sorted by name, on either backend."""
        if not self.is_s3:
            return [LandedFile(p.name, p.resolve().as_uri(), _open=functools.partial(_read_bytes, p)) for p in self.files(pattern)]
        from mesh_platform.io.s3 import list_objects

        return [f for f in list_objects(self.path) if fnmatch.fnmatchcase(f.name, pattern)]

    @classmethod
    def claims(cls) -> "LandingZone":
        """``CLAIMS_LANDING`` (a folder or ``s3://bucket/prefix``); ``CLAIMS_LANDING_DIR`` is its older name."""
        default = os.environ.get("CLAIMS_LANDING_DIR") or str(_layout().claims_landing)
        return cls(path=os.environ.get("CLAIMS_LANDING") or default)

    @classmethod
    def support_chat(cls) -> "LandingZone":
        return cls(path=os.environ.get("SUPPORT_CHAT_EXPORT_DIR", str(_layout().chat_export.parent)))


def _read_bytes(path: Path) -> io.BytesIO:
    return io.BytesIO(path.read_bytes())
