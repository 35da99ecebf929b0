"""Resources for source-aligned domains: reading the operational systems the mesh starts from.

The defaults point at the seeded simulators under the sources folder of the settings the domain
passes (``domain.settings``, from ``MESH_SOURCES``; see :mod:`mesh_platform.sources.simulation`);
production overrides them with environment variables, e.g. ``POLICY_ADMIN_DB_URL=postgresql://...``
(any SQLAlchemy URL).
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import dagster as dg
import pandas as pd

from mesh_platform.foundations.settings import MeshSettings
from mesh_platform.sources.landed import LandedFile
from mesh_platform.sources.simulation import SourceLayout


def _layout(settings: MeshSettings) -> SourceLayout:
    """The simulators' files under the sources folder of ``settings`` (the domain's, ``domain.settings``)."""
    return SourceLayout(Path(settings.sources))


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
    def policy_admin(cls, settings: MeshSettings) -> "SqlDatabase":
        """``POLICY_ADMIN_DB_URL``, else the simulated database under the sources of ``settings``
        (pass the domain's: ``SqlDatabase.policy_admin(domain.settings)``)."""
        default = "sqlite:///" + str(_layout(settings).policy_db)
        return cls(url=os.environ.get("POLICY_ADMIN_DB_URL", default))


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
        return self.landed_matching([pattern])

    def landed_matching(self, patterns: Sequence[str]) -> list[LandedFile]:
        """Every file matching any of ``patterns``, from one listing of the zone (so that files landed
        together are seen together), sorted by name."""
        def wanted(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)

        if not self.is_s3:  # stat only the files that match (the zone holds every batch ever landed)
            folder = Path(self.path)
            return [_local(p) for p in sorted(folder.iterdir()) if wanted(p.name) and p.is_file()] if folder.is_dir() else []
        from mesh_platform.sources.s3 import list_objects

        return [f for f in list_objects(self.path) if wanted(f.name)]  # listed sorted by name

    @classmethod
    def claims(cls, settings: MeshSettings) -> "LandingZone":
        """``CLAIMS_LANDING`` (a folder or ``s3://bucket/prefix``); ``CLAIMS_LANDING_DIR`` is its older
        name; else the simulated landing folder under the sources of ``settings`` (the domain's)."""
        default = os.environ.get("CLAIMS_LANDING_DIR") or str(_layout(settings).claims_landing)
        return cls(path=os.environ.get("CLAIMS_LANDING") or default)

    @classmethod
    def support_chat(cls, settings: MeshSettings) -> "LandingZone":
        """``SUPPORT_CHAT_EXPORT_DIR``, else the simulated export under the sources of ``settings``."""
        return cls(path=os.environ.get("SUPPORT_CHAT_EXPORT_DIR", str(_layout(settings).chat_export.parent)))


def _read_bytes(path: Path) -> io.BytesIO:
    return io.BytesIO(path.read_bytes())


def _local(path: Path) -> LandedFile:
    stat = path.stat()
    return LandedFile(path.name, path.resolve().as_uri(), f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_mtime, _open=functools.partial(_read_bytes, path))


def days_in_file(file: LandedFile, column: str) -> set[str]:
    """The days (partition keys) of the rows of one landed CSV or JSON-lines file, from ``column``.

    A value that is not a date or time (a malformed row) is not a day: the asset reading the file
    meets it again and quarantines or rejects it."""
    from mesh_platform.products.partitions import KEY_FORMAT

    if file.name.endswith((".jsonl", ".json")):
        import pyarrow as pa
        import pyarrow.json as pj

        # only the day column, as text, by Arrow's reader: a third of pandas' time on 20k events
        only = pj.ParseOptions(explicit_schema=pa.schema([(column, pa.string())]), unexpected_field_behavior="ignore")
        try:
            values = pj.read_json(file.open(), parse_options=only).column(column).to_pandas()
        except (pa.ArrowInvalid, ValueError):  # a broken line, or a day that is not text: the lines one by one
            values = None
        if values is None:
            from mesh_platform.quality.quarantine import json_lines

            rows, _ = json_lines(file.open().read().decode("utf-8", errors="replace"))
            values = pd.Series([r.get(column) for r in rows], dtype=object)
    else:
        head = pd.read_csv(file.open(), nrows=0)
        if column not in head.columns:
            values = pd.Series([], dtype=object)
        else:
            try:
                values = pd.read_csv(file.open(), usecols=[column], dtype=str)[column]
            except pd.errors.ParserError:  # a line with too many fields: skipped here, quarantined by the asset
                values = pd.read_csv(file.open(), usecols=[column], dtype=str, on_bad_lines="skip", engine="python")[column]
    # each distinct value parsed once ("mixed": every value on its own format): a day's 20k events
    # hold a few dozen distinct times, and parsing every value cost 12-18 ms of a new day's landing
    distinct = pd.Series(values.dropna().unique(), dtype=object)
    days = pd.to_datetime(distinct, errors="coerce", format="mixed").dropna().dt.strftime(KEY_FORMAT)
    return set(days.unique())


@dataclass
class LandedRun:
    """The landed files a partitioned run reads: only those with rows on the run's days.

    Which days a file touches is read once per file (only its day column) and kept in an index
    in the domain's private area of the lake (``<domain>/_private/_landing_index/``), keyed by the
    file's name and etag (size and modification time locally): a changed file is read again. The
    index only saves reading; a file missing from it is read. ``days`` is None for an unpartitioned run
    (every file, every row).

    A row on no day of the partitions (its day unreadable, before the first day, in a year not yet
    begun) belongs to no run's days. So that it is not lost, one run per file quarantines such rows:
    the run of the file's first day that is a partition, or of the latest partition when the file
    has none (``owners``: the files whose orphan rows this run holds)."""

    files: list[LandedFile]
    column: str
    days: list[str] | None
    owners: set[str] | None = None  # None: every file (an unpartitioned run)
    partition_days: set[str] | None = None  # every day of the partitions (None: unpartitioned)

    def rows_in_run(self, frame: pd.DataFrame, rejects=None, file_column: str | None = None) -> pd.DataFrame:
        """The rows of ``frame`` on the run's days (all rows for an unpartitioned run), ``column``
        read as a time. With ``rejects``, rows on no partition day are quarantined by their file's
        owning run (``file_column`` names each row's file stem) instead of being left out."""
        from mesh_platform.products.partitions import KEY_FORMAT
        from mesh_platform.quality.quarantine import NO_PARTITION_DAY, _examples

        if frame.empty:
            return frame.assign(**{self.column: pd.to_datetime(frame[self.column])}).reset_index(drop=True)
        when = pd.to_datetime(frame[self.column], errors="coerce", format="mixed")
        if rejects is None and when.isna().any() and frame[self.column].notna().any():
            when = pd.to_datetime(frame[self.column])  # no quarantine to hand it to: fail as before, loudly
        day = when.dt.strftime(KEY_FORMAT)
        orphan = when.isna() | (~day.isin(self.partition_days) if self.partition_days is not None else False)
        frame = frame.assign(**{self.column: when})
        if rejects is not None and orphan.any():
            owned = orphan if self.owners is None or file_column is None else orphan & frame[file_column].isin(self.owners)
            if owned.any():
                rejects.reject(frame[owned], NO_PARTITION_DAY, column=self.column, examples=_examples(frame.loc[owned, self.column].astype("str")),
                               partitions=f"{min(self.partition_days)}..{max(self.partition_days)}" if self.partition_days else None)
        keep = ~orphan if self.days is None else day.isin(set(self.days)) & ~orphan
        return frame[keep].reset_index(drop=True)


def landed_for_run(context, landing: LandingZone, pattern: str, day_column: str, settings: MeshSettings | None = None) -> LandedRun:
    """The files matching ``pattern`` that a step of a partitioned asset reads (:class:`LandedRun`).
    Their index is kept in the step's lake: its IO manager's, or that of ``settings``."""
    import json

    from mesh_platform.foundations.metadata import LANDED_SELECTION
    from mesh_platform.products.build import step_lake
    from mesh_platform.products.partitions import run_keys
    from mesh_platform.storage.lake import PRIVATE

    files = landing.landed(pattern)
    keys = run_keys(context)
    if keys is None:
        return LandedRun(files, day_column, None)
    lake = step_lake(context, settings)
    domain = context.asset_key.path[0]
    where = f"{domain}/{PRIVATE}/_landing_index/{pattern.replace('*', '_').replace('/', '_')}.json"
    try:
        index = json.loads(lake.read_bytes(where)) if lake.exists(where) else {}
    except (ValueError, OSError):
        index = {}  # an unreadable index is rebuilt: it only saves reading
    wanted, changed = set(keys), False
    partitions_def = context.assets_def.partitions_def if context.assets_def is not None else None
    every_day = set(partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)) if partitions_def is not None else set(keys)
    latest = max(every_day) if every_day else None
    chosen, owners = [], set()
    for f in files:
        entry = index.get(f.name)
        if not entry or entry.get("etag") != f.etag or not f.etag:
            entry = {"etag": f.etag, "days": sorted(days_in_file(f, day_column))}
            index[f.name], changed = entry, True
        in_partitions = sorted(set(entry["days"]) & every_day)
        owner_day = in_partitions[0] if in_partitions else latest  # who quarantines its rows on no partition day
        if owner_day in wanted:
            owners.add(PurePosixPath(f.name).stem)
        if wanted & set(in_partitions) or owner_day in wanted:
            chosen.append(f)
    index = {name: entry for name, entry in index.items() if name in {f.name for f in files}}
    if changed:
        lake.write_bytes(where, json.dumps(index, sort_keys=True).encode())
    # metadata of the output, not an INFO line: a run prints its INFO lines on the console of
    # `mesh dev`, which runs at warning level (docs: README, mesh_platform.mesh.devserver)
    context.add_output_metadata({LANDED_SELECTION: f"{len(chosen)} of {len(files)} landed file(s) have rows on the run's {len(keys)} day(s)"})
    return LandedRun(chosen, day_column, keys, owners, every_day)
