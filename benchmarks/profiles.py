"""``python -m benchmarks profile [--quick] [--out DIR]``: where the platform's time goes (cProfile).

Profiles the platform side of the benchmarks whose targets it can miss, each in a fresh process
after a warm-up, and writes ``profile_<name>.txt`` next to ``latest.json``: self time summed by
area (platform module, library), then the platform's functions and all functions by cumulative
time.

``io_roundtrip``      one platform round trip (``conform`` + ``Lake`` write/read + ``to_pandas``), one
                      through ``MeshIOManager`` and one write-audit-publish (``quality.audit`` +
                      ``MeshIOManager``), 1M rows
``definitions_load``  building the Definitions of 2000 synthetic products over 20 domains in one
                      process (contract cache warm), resolving the repositories and serializing
                      their snapshots
``whole_mesh``        ``mesh materialize --scale 1`` in a fresh ``MESH_HOME`` (after one warm-up run)
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from benchmarks.harness import ROOT, RunConfig, run_command, run_isolated

FULL = {"io_roundtrip": 1_000_000, "definitions_load": 2000, "whole_mesh": 1}
QUICK = {"io_roundtrip": 20_000, "definitions_load": 50, "whole_mesh": 0.5}
TOP = 40

# (area, regex on the function's file) in order: the first match names the area
AREAS = [
    ("mesh_platform.contracts (model, loader, registry, enforcement)", r"mesh_platform/contracts/"),
    ("mesh_platform.governance (grants, access, policies, quotas)", r"mesh_platform/governance/"),
    ("mesh_platform.quality", r"mesh_platform/quality/"),
    ("mesh_platform.storage", r"mesh_platform/storage/"),
    ("mesh_platform.products (domain, plan, ports, specs)", r"mesh_platform/products/"),
    ("mesh_platform (other)", r"mesh_platform/"),
    ("dagster", r"/dagster[^/]*/"),
    ("PyYAML", r"/yaml/"),
    ("pydantic", r"/pydantic"),
    ("pyarrow", r"/pyarrow/"),
    ("duckdb", r"/duckdb/"),
    ("pandas / numpy", r"/(pandas|numpy)/"),
    ("great_expectations", r"/great_expectations/"),
    ("dbt", r"/dbt/"),
    ("scikit-learn / scipy", r"/(sklearn|scipy)/"),
    ("SQLAlchemy / sqlite3 (Dagster's event log)", r"/(sqlalchemy|sqlite3|alembic)/"),
    ("importlib (module loading)", r"(<frozen importlib|importlib/)"),
    ("pathlib / os.path (path resolution)", r"(pathlib\.py|posixpath)"),
    ("inspect / tokenize (source inspection)", r"(inspect\.py|tokenize\.py|linecache\.py)"),
    ("built-ins and C extensions", r"^~$"),
]


def _area(filename: str) -> str:
    for name, pattern in AREAS:
        if re.search(pattern, filename):
            return name
    return "other Python"


def report(profile: cProfile.Profile | str, title: str) -> str:
    """Self time by area, then the top functions by cumulative time (``profile``: or a saved file)."""
    stats = pstats.Stats(profile)
    by_area: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, self_time, _, _) in stats.stats.items():
        by_area[_area(filename)] += self_time
    total = sum(by_area.values()) or 1.0
    lines = [f"# {title}", "", f"self time by area (total {total:.2f} s under the profiler):"]
    lines += [f"  {seconds:7.2f} s  {100 * seconds / total:5.1f}%  {area}" for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])]
    text = io.StringIO()
    stats.stream = text
    stats.sort_stats("cumulative")
    text.write("## platform functions by cumulative time\n")
    stats.print_stats("mesh_platform/", TOP)
    text.write("## all functions by cumulative time\n")
    stats.print_stats(TOP)
    return "\n".join(lines) + "\n\n" + text.getvalue()


# -- child processes ------------------------------------------------------------------------------


def profile_io(rows: int) -> dict:
    """Child: profile one warm platform round trip and one warm write-audit-publish round trip."""
    from benchmarks import io_roundtrip
    from benchmarks.synthetic_table import make_frame, write_contract

    with tempfile.TemporaryDirectory(prefix="bench-profile-io-") as tmp:
        work = Path(tmp)
        os.environ["MESH_DOMAINS"] = str(work / "domains")
        from mesh_platform.contracts import load_contract

        contract = load_contract(write_contract(work))
        df = make_frame(rows)
        sections = []
        for method in ("platform", "platform MeshIOManager", io_roundtrip.AUDITED):
            roundtrip = io_roundtrip.FACTORIES[method](work, contract)
            roundtrip(df)  # warm-up
            profile = cProfile.Profile()
            profile.enable()
            _, phases = roundtrip(df)
            profile.disable()
            title = f"io_roundtrip: {method} @ {rows:,} rows, phases " + ", ".join(f"{k} {v:.3f}s" for k, v in phases.items())
            sections.append(report(profile, title))
        return {"text": "\n\n".join(sections)}


def profile_definitions(modules: list[str]) -> dict:
    """Child: profile building, resolving and snapshotting the Definitions of ``modules``."""
    import importlib

    import dagster  # noqa: F401  (not profiled: every flavor pays it)
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    import mesh_platform  # noqa: F401

    profile = cProfile.Profile()
    profile.enable()
    repos = [importlib.import_module(name).defs.get_repository_def() for name in modules]
    for repo in repos:
        repo.load_all_definitions()
        serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))
    profile.disable()
    return {"text": report(profile, f"definitions_load: platform, {len(modules)} domains in one process (definitions + repository + snapshot)")}


# -- parent ---------------------------------------------------------------------------------------


def _definitions(products: int) -> str:
    from benchmarks.synthetic_mesh import generate

    with tempfile.TemporaryDirectory(prefix="bench-profile-mesh-") as tmp:
        mesh = generate(Path(tmp) / "platform", products, "platform")
        run_command([sys.executable, "-m", "compileall", "-q", str(mesh.root)], env=mesh.env())
        warm_up = {"modules": mesh.modules, "import_platform": True}  # fills the platform's contract cache
        run_isolated("benchmarks.definitions_load:load_case", warm_up, env=mesh.env(), pythonpath=[str(mesh.root)])
        return run_isolated(f"{__name__}:profile_definitions", {"modules": mesh.modules}, env=mesh.env(), pythonpath=[str(mesh.root)])["text"]


def _whole_mesh(scale: float) -> str:
    from benchmarks.whole_mesh import materialize_once, mesh_env

    materialize_once(scale)  # warm-up: bytecode cache
    with tempfile.TemporaryDirectory(prefix="bench-profile-home-") as home:
        out = Path(home) / "materialize.prof"
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "mesh_platform.cli", "materialize", "--in-process", "--scale", f"{scale:g}"]
        run_command(argv, env=mesh_env(home), cwd=ROOT)
        return report(str(out), f"whole_mesh: mesh materialize --scale {scale:g} in a fresh MESH_HOME")


def run_profiles(config: RunConfig) -> list[Path]:
    sizes = QUICK if config.quick else FULL
    config.out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, size in sizes.items():
        config.log(f"profiling {name} @ {size:,}")
        if name == "io_roundtrip":
            text = run_isolated(f"{__name__}:profile_io", {"rows": size})["text"]
        elif name == "definitions_load":
            text = _definitions(size)
        else:
            text = _whole_mesh(size)
        path = config.out_dir / f"profile_{name}.txt"
        path.write_text(text)
        written.append(path)
        print(f"wrote {path}")
    return written
