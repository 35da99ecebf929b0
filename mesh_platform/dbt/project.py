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

from mesh_platform.products.ports import InputPort

WATCHED = ("*.sql", "*.yml", "*.yaml")
NO_TRACKING = ("--no-send-anonymous-usage-stats",)
"""dbt sends no usage events (no network from a run) and writes no ``.user.yml`` into the project."""


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

    def warm_invocation(self) -> bool:
        """One ``dbt ls`` on the prepared manifest, into a temporary target: dbt's first invocation
        in a process renders the project and profile, builds the JSON schemas it validates them
        against, registers the adapter (whose behaviour flags walk ``inspect``'s module index) and
        builds the graph, most of a second of the first ``dbt build`` that every later invocation
        in the process, or in a fork of it, skips (:mod:`mesh_platform.deployment.run_preload`). It lists nodes only: no database
        connection, no thread, nothing written outside the temporary folder. True when dbt said
        it succeeded."""
        import tempfile

        from dbt.cli.main import dbtRunner

        with tempfile.TemporaryDirectory(prefix="mesh-dbt-warm-") as tmp:
            args = ["ls", *NO_TRACKING, "--quiet", "--project-dir", str(self.path), "--profiles-dir", str(self.path),
                    "--target-path", str(Path(tmp) / "target"), "--log-path", str(Path(tmp) / "logs"),
                    "--log-level", "none", "--log-level-file", "none"]
            return bool(dbtRunner(manifest=self.dbt_manifest()).invoke(args).success)

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
