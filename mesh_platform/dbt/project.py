"""A dbt project that implements a domain: its manifest, prepared once, and its input ports.

The manifest is prepared at setup time (``mesh dbt prepare``, which the ``mesh`` commands run when
needed), never parsed when definitions load: loading a code location only reads
``target/manifest.json``. If a model, source or the schema file changed since, loading fails with
the command to run, rather than showing stale assets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mesh_platform.products.ports import InputPort

if TYPE_CHECKING:
    import pyarrow as pa

WATCHED = ("*.sql", "*.yml", "*.yaml")
NO_TRACKING = ("--no-send-anonymous-usage-stats",)
"""dbt sends no usage events (no network from a run) and writes no ``.user.yml`` into the project."""
DUCKDB_ENV = "MESH_DBT_DUCKDB"
"""Where the profile (``profiles.yml``) finds the DuckDB file of the invocation."""


def close_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the process after an invocation."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if environment is not None and hasattr(environment, "close"):
        environment.close()


class ManifestNotPrepared(RuntimeError):
    pass


@dataclass(frozen=True)
class DbtDomainProject:
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / "target" / "manifest.json"

    def sources_changed_since(self, stamp: float) -> list[Path]:
        changed = []
        for pattern in WATCHED:
            for f in self.path.rglob(pattern):
                if "target" in f.relative_to(self.path).parts or "dbt_packages" in f.parts:
                    continue
                if f.stat().st_mtime > stamp:
                    changed.append(f)
        return changed

    def is_stale(self) -> bool:
        if not self.manifest_path.exists():
            return True
        return bool(self.sources_changed_since(self.manifest_path.stat().st_mtime))

    def prepare(self, force: bool = False) -> Path:
        """``dbt parse`` into ``target/manifest.json`` when missing or stale."""
        if not force and not self.is_stale():
            return self.manifest_path
        self.check_yaml()
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(
            # dbt's log goes into target/ too: a prepared project has one build folder, no logs/
            ["parse", *NO_TRACKING, "--project-dir", str(self.path), "--profiles-dir", str(self.path), "--quiet",
             "--log-path", str(self.manifest_path.parent)]
        )
        if not result.success:
            raise RuntimeError(f"dbt parse failed for {self.path}: {result.exception}")
        os.utime(self.manifest_path)
        return self.manifest_path

    def check_yaml(self) -> None:
        """Refuse hostile YAML (alias bombs, non-UTF-8, directories) before dbt parses it without limits.

        Raises :class:`~mesh_platform.foundations.problems.ContractError` naming every such file of the project.
        """
        from mesh_platform.foundations import safe_yaml
        from mesh_platform.foundations.problems import display_path
        from mesh_platform.foundations.problems import ContractError

        problems = []
        for pattern in ("*.yml", "*.yaml"):
            for f in sorted(self.path.rglob(pattern)):
                if "target" in f.relative_to(self.path).parts or "dbt_packages" in f.parts or "logs" in f.relative_to(self.path).parts:
                    continue
                try:
                    safe_yaml.load_file(f, display_path(f))
                except ContractError as exc:
                    problems.extend(exc.problems)
        if problems:
            raise ContractError(problems)

    @cached_property
    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            raise ManifestNotPrepared(
                f"{self.manifest_path} does not exist: run `mesh dbt prepare` (the mesh commands and the Quick start do it)"
            )
        changed = self.sources_changed_since(self.manifest_path.stat().st_mtime)
        if changed:
            names = ", ".join(str(p.relative_to(self.path)) for p in changed[:3])
            raise ManifestNotPrepared(f"the dbt manifest of {self.path} is older than {names}: run `mesh dbt prepare`")
        return json.loads(self.manifest_path.read_text())

    @property
    def state_path(self) -> Path:
        """dbt's own serialized manifest, written by ``dbt parse`` next to ``manifest.json``."""
        return self.manifest_path.parent / "partial_parse.msgpack"

    def dbt_manifest(self):
        """The prepared manifest as dbt's ``Manifest`` object, for ``dbtRunner(manifest=...)``.

        Read from dbt's partial-parse state rather than ``manifest.json``: the JSON artifact drops
        what generic tests need at run time (their ``_dbt_generic_test_kwargs`` context), the
        state file is the complete object dbt itself reloads. Loading it takes ~0.1 s, where
        letting ``dbt build`` re-check the project costs seconds per run. ``None`` when there is
        no usable state: missing, unreadable, or written by another dbt version (dbt's own rule for
        reusing it); dbt then parses as usual, slower but correct. Staleness against the project
        files is checked by :attr:`manifest` first. Loaded once per process while the state file
        stays the same (dbt's programmatic API reuses one manifest across invocations): a run
        started from a process that loaded it (:mod:`mesh_platform.deployment.run_preload`) finds
        it loaded.
        """
        self.manifest  # raises ManifestNotPrepared when missing or older than the project files
        try:
            stat = self.state_path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self.__dict__.get("_dbt_manifest")
        if cached is None or cached[0] != stamp:
            cached = self.__dict__["_dbt_manifest"] = (stamp, self._load_state())
        return cached[1]

    def build(self, db_path: Path, work: Path, select: list[str] | None = None, log_level: str = "warn", keep_open: bool = False):
        """``dbt build`` in this process on the prepared manifest, into the DuckDB file ``db_path``
        (the profile reads its path from ``MESH_DBT_DUCKDB``), with ``work`` (a folder private to
        the caller) as its target and log folder; ``select``: model names (every model when None).
        The results are read from the returned object: dbt writes no ``manifest.json`` or
        ``run_results.json``.

        dbt-duckdb keeps the database open for the process after the invocation (its threads with
        it). It is closed here (:func:`close_duckdb`), so that the file can go and a fork of this
        process inherits no DuckDB instance; ``keep_open``: the caller reads the tables first (a
        connection to the same file is then the same open database, not a reopening of the file)
        and calls :func:`close_duckdb` itself."""
        from concurrent.futures import ThreadPoolExecutor

        from dbt.cli.main import dbtRunner

        args = ["build", *NO_TRACKING, "--no-write-json", "--project-dir", str(self.path), "--profiles-dir", str(self.path),
                "--target-path", str(work / "target"), "--log-level", log_level, "--log-path", str(work / "logs"), "--log-level-file", "none"]
        if select is not None:
            args += ["--select", " ".join(select)]
        previous = os.environ.get(DUCKDB_ENV)
        os.environ[DUCKDB_ENV] = str(db_path)
        done = False
        try:
            # In a thread of its own: registering the adapter walks the caller's stack with
            # inspect.stack() once per behaviour flag (dbt names the module that created them), and
            # in a Dagster step that stack is some 30 frames deeper than dbt's own: about 30 ms a
            # walk there (measured), nothing in a fresh thread.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-dbt") as invocation:
                result = invocation.submit(dbtRunner(manifest=self.dbt_manifest()).invoke, args).result()
            done = True
            return result
        finally:
            if previous is None:
                os.environ.pop(DUCKDB_ENV, None)
            else:
                os.environ[DUCKDB_ENV] = previous
            if not (keep_open and done):
                close_duckdb()

    def warm_build(self, sources: dict[str, "pa.Schema"]) -> bool:
        """One ``dbt build`` of every model over empty sources (``sources``: each source's unique id
        and the columns it is staged with), in a temporary folder: dbt's first build in a process
        renders the project and profile, builds the JSON schemas it validates them against,
        registers the adapter, compiles the Jinja of every macro the build calls (materializations,
        tests, schema macros: kept for the process) and loads its SQL result types, which every later
        build in the process, or in a fork of it, skips (:mod:`mesh_platform.deployment.run_preload`).
        Measured at 180 days of claims: a first build took 1.26 s and later ones 0.60 s; after a
        ``dbt ls`` ahead (rendering and adapter, not the macros) the first took 0.80 s, after this
        build 0.60 s.
        Nothing is written outside the temporary folder; no thread and no database stays open.
        True when dbt said it succeeded."""
        import tempfile

        import duckdb

        from mesh_platform.foundations.sql import quote_identifier

        database = next((n["database"] for n in self.models().values() if n.get("database")), None) or "warm"
        with tempfile.TemporaryDirectory(prefix="mesh-dbt-warm-") as tmp:
            db_path = Path(tmp) / f"{database}.duckdb"
            con = duckdb.connect(str(db_path))
            try:
                for unique_id, schema in sources.items():
                    source = self.manifest["sources"][unique_id]
                    where = f"{quote_identifier(source['schema'])}.{quote_identifier(source['identifier'] or source['name'])}"
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(source['schema'])}")
                    con.register("mesh_empty_source", schema.empty_table())
                    con.execute(f"CREATE TABLE {where} AS SELECT * FROM mesh_empty_source")
                    con.unregister("mesh_empty_source")
            finally:
                con.close()
            return bool(self.build(db_path, Path(tmp), log_level="none").success)

    def _load_state(self):
        from dbt.contracts.graph.manifest import Manifest
        from dbt.parser.manifest import extended_mashumuro_decoder
        from dbt.version import __version__

        try:
            manifest = Manifest.from_msgpack(self.state_path.read_bytes(), decoder=extended_mashumuro_decoder)
        except Exception:  # a cache: an unreadable one only costs a parse
            return None
        return manifest if manifest.metadata.dbt_version == __version__ else None

    def source_ports(self) -> dict[str, InputPort]:
        """Every dbt source table as the input port it declares in ``meta.mesh`` (by source unique id)."""
        ports = {}
        for unique_id, source in self.manifest["sources"].items():
            mesh = (source.get("meta") or {}).get("mesh") or (source.get("config", {}).get("meta") or {}).get("mesh")
            if not mesh:
                raise ValueError(f"{source['original_file_path']}: source {source['source_name']}.{source['name']}: meta.mesh (product, major) is required")
            ports[unique_id] = InputPort(mesh["product"], major=mesh["major"], columns=mesh.get("columns"))
        return ports

    def models(self) -> dict[str, dict]:
        return {uid: node for uid, node in self.manifest["nodes"].items() if node["resource_type"] == "model"}
