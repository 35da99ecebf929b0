"""definitions_load: build and snapshot every domain's Definitions, as a code server does for the UI.

For N products over 20 domains (:mod:`benchmarks.synthetic_mesh`), each flavor of the same asset
graph (``platform``; bare ``dagster``, the baseline; ``dagster_rich``, hand-written metadata) is
loaded in a fresh process (:func:`load_case`), which times, in order:

``import_dagster``   ``import dagster`` (excluded from the headline figure: every flavor pays it)
``import_platform``  ``import mesh_platform`` (platform flavor only: pandas, pyarrow, pydantic ...)
``definitions``      importing each domain's ``definitions`` module, i.e. building its ``Definitions``
``repository``       ``defs.get_repository_def()`` + ``load_all_definitions()`` (what a code server
                     does when it loads a location)
``snapshot``         ``serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))``, what
                     a gRPC code server sends the webserver (``dagster/_grpc/server.py``)

The headline, *load+snapshot*, is everything after ``import dagster``; *process* is the whole
child process from interpreter start to exit. Two ways of loading are measured:

``mesh``         all 20 domains in one process (what ``mesh validate`` / ``mesh materialize`` do),
                 median of ``repeats`` fresh processes, run in rounds that interleave the flavors.
``code server``  one domain per process (what ``dagster dev`` does: one code server per domain),
                 a sample of domains (first, middle, last), three fresh processes each; reported per
                 code server (median over the sample of each domain's median).

The warm-up is ``compileall`` of the generated modules (bytecode cached as in production, see
:mod:`benchmarks.harness`) and one platform load before the measured rounds: that first load is
reported too, as *platform, cold contract cache* (what a code server pays in a fresh container, the
operating system's file cache cold). Parsed contracts are no longer cached on disk (a file every
domain could write; see ``mesh_platform.contracts.loader``), so every measured process parses its
contracts. Every measured process is fresh.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RunConfig, run_command, run_isolated
from benchmarks.results import BenchmarkResult, Case, Target

NAME = "definitions_load"
DESCRIPTION = "build + snapshot the Definitions of N products over 20 domains, platform vs bare Dagster"
BASELINE = "dagster"
FLAVOR_LABELS = {"dagster": "bare dagster", "dagster_rich": "dagster + same metadata", "platform": "platform"}
DOMAINS = 20
TARGET_RATIO = 1.2
RICH_TARGET_RATIO = 1.5  # against Dagster with the same metadata written by hand
TARGET_SECONDS = (2000, 3.0)  # (products, seconds of load+snapshot)

# products -> timed processes (interleaved rounds over the flavors) for the one-process "mesh" load
FULL_SIZES = {200: 3, 2000: 3, 5000: 2}
QUICK_SIZES = {50: 1}
CODE_SERVER_SAMPLE = 3  # domains loaded alone, in their own process (first, middle, last)
QUICK_CODE_SERVER_SAMPLE = 1
CODE_SERVER_REPEATS = 3  # fresh processes per sampled domain (a code server loads in ~1-3 s: one is noisy)
PHASES = ("import_dagster", "import_platform", "definitions", "repository", "snapshot")


# -- child process --------------------------------------------------------------------------------


def load_case(modules: list[str], import_platform: bool) -> dict[str, Any]:
    """Child-process entry: import ``modules`` and snapshot their Definitions; seconds per phase."""
    clock = time.perf_counter
    started = clock()
    cpu_started = time.process_time()
    import dagster  # noqa: F401
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    phases = {"import_dagster": clock() - started}
    cpu_after_import = time.process_time()
    mark = clock()
    if import_platform:
        import mesh_platform  # noqa: F401
    phases["import_platform"] = clock() - mark

    mark = clock()
    per_module = []
    all_defs = []
    for name in modules:
        one = clock()
        all_defs.append(importlib.import_module(name).defs)
        per_module.append(round(clock() - one, 4))
    phases["definitions"] = clock() - mark

    mark = clock()
    repos = [defs.get_repository_def() for defs in all_defs]
    for repo in repos:
        repo.load_all_definitions()
    phases["repository"] = clock() - mark

    mark = clock()
    snapshot_bytes = sum(len(serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))) for repo in repos)
    phases["snapshot"] = clock() - mark

    assets = sum(len(repo.asset_graph.get_all_asset_keys()) for repo in repos)
    return {
        "phases_s": {k: round(v, 4) for k, v in phases.items()},
        "load_snapshot_s": round(sum(v for k, v in phases.items() if k != "import_dagster"), 4),
        "load_snapshot_cpu_s": round(time.process_time() - cpu_after_import, 4),
        "process_cpu_to_here_s": round(time.process_time() - cpu_started, 4),
        "per_module_s": per_module,
        "snapshot_bytes": snapshot_bytes,
        "asset_keys": assets,
    }


# -- parent ---------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _precompile(mesh) -> None:
    """Byte-compile the generated modules into the children's bytecode cache (the warm-up)."""
    run_command([sys.executable, "-m", "compileall", "-q", str(mesh.root)], env=mesh.env())


def _load_once(mesh, modules: list[str]) -> dict[str, Any]:
    kwargs = {"modules": modules, "import_platform": mesh.flavor == "platform"}
    return run_isolated(f"{__name__}:load_case", kwargs, env=mesh.env(), pythonpath=[str(mesh.root)])


def _figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median figures over fresh processes."""
    return {
        "load_snapshot_s": _median([r["load_snapshot_s"] for r in runs]),
        "load_snapshot_cpu_s": _median([r["load_snapshot_cpu_s"] for r in runs]),
        "process_s": _median([r["process_wall_s"] for r in runs]),
        "process_cpu_s": _median([r["process_cpu_s"] for r in runs]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "phases_median_s": {p: _median([r["phases_s"][p] for r in runs]) for p in PHASES},
        "samples_load_snapshot_s": [r["load_snapshot_s"] for r in runs],
        "slowest_module_s": max(max(r["per_module_s"]) for r in runs),
        "snapshot_bytes": runs[0]["snapshot_bytes"],
        "asset_keys": runs[0]["asset_keys"],
    }


def _code_servers(mesh, sample: int, repeats: int = 1) -> dict[str, Any]:
    """One domain per fresh process for a sample of domains (first, ..., last), ``repeats`` processes each."""
    picks = sorted({round(i * (len(mesh.domains) - 1) / max(sample - 1, 1)) for i in range(sample)})
    domains = [mesh.domains[i] for i in picks]
    per_domain = {d: _figures([_load_once(mesh, [mesh.module(d)]) for _ in range(repeats)]) for d in domains}
    return {
        "load_snapshot_s": _median([r["load_snapshot_s"] for r in per_domain.values()]),
        "load_snapshot_cpu_s": _median([r["load_snapshot_cpu_s"] for r in per_domain.values()]),
        "process_s": _median([r["process_s"] for r in per_domain.values()]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in per_domain.values()),
        "per_domain": {d: {k: r[k] for k in ("load_snapshot_s", "load_snapshot_cpu_s", "process_s", "phases_median_s", "peak_rss_mb")} for d, r in per_domain.items()},
    }


def _cases_for_size(result: BenchmarkResult, products: int, meshes: dict, repeats: int, sample: int, config: RunConfig) -> None:
    size = f"{products} products"
    for mesh in meshes.values():
        _precompile(mesh)
    config.log(f"  {NAME}: platform @ {size} (cold contract cache)")
    cold = _figures([_load_once(meshes["platform"], meshes["platform"].modules)])
    runs: dict[str, list] = {flavor: [] for flavor in meshes}
    for round_ in range(repeats):  # interleaved, so that a burst of other load hits every flavor alike
        for flavor, mesh in meshes.items():
            config.log(f"  {NAME}: {FLAVOR_LABELS[flavor]} @ {size} (all domains, one process; {round_ + 1}/{repeats})")
            runs[flavor].append(_load_once(mesh, mesh.modules))
    for flavor, mesh in meshes.items():
        label = FLAVOR_LABELS[flavor]
        base = None if flavor == BASELINE else FLAVOR_LABELS[BASELINE]
        figures = _figures(runs[flavor])
        details = {k: v for k, v in figures.items() if k not in ("load_snapshot_s", "peak_rss_mb")}
        result.cases.append(
            Case(f"{label}: load+snapshot", size, figures["load_snapshot_s"], base and f"{base}: load+snapshot",
                 cpu_seconds=figures["load_snapshot_cpu_s"], peak_rss_mb=figures["peak_rss_mb"], details=details)
        )
        result.cases.append(
            Case(f"{label}: process", size, figures["process_s"], base and f"{base}: process", cpu_seconds=figures["process_cpu_s"], peak_rss_mb=figures["peak_rss_mb"])
        )
    result.cases.append(
        Case("platform, cold contract cache: load+snapshot", size, cold["load_snapshot_s"], f"{FLAVOR_LABELS[BASELINE]}: load+snapshot",
             cpu_seconds=cold["load_snapshot_cpu_s"], peak_rss_mb=cold["peak_rss_mb"], details=cold)
    )
    # the platform's per-code-server figure is compared with Dagster carrying the same metadata
    # (what a team would hand-write to show as much), which is compared with bare Dagster
    code_server_base = {"dagster": None, "dagster_rich": "dagster", "platform": "dagster_rich"}
    for flavor, base_flavor in code_server_base.items():
        label = FLAVOR_LABELS[flavor]
        config.log(f"  {NAME}: {label} @ {size} (one code server per domain, {sample} sampled)")
        figures = _code_servers(meshes[flavor], sample, repeats=CODE_SERVER_REPEATS if sample > 1 else 1)
        base = base_flavor and f"{FLAVOR_LABELS[base_flavor]}: per code server"
        result.cases.append(
            Case(f"{label}: per code server", size, figures["load_snapshot_s"], base, cpu_seconds=figures["load_snapshot_cpu_s"], peak_rss_mb=figures["peak_rss_mb"], details=figures)
        )


def _breakdown_note(result: BenchmarkResult, size: str) -> str:
    parts = []
    for flavor in ("dagster", "dagster_rich", "platform"):
        case = result.case(f"{FLAVOR_LABELS[flavor]}: load+snapshot", size)
        if case:
            phases = ", ".join(f"{k} {v:.2f}" for k, v in case.details["phases_median_s"].items() if k != "import_dagster")
            parts.append(f"{FLAVOR_LABELS[flavor]}: {phases}")
    return f"phases at {size} (median s, one process): " + "; ".join(parts)


def run(config: RunConfig) -> BenchmarkResult:
    from benchmarks.synthetic_mesh import generate

    result = BenchmarkResult(NAME, DESCRIPTION, baseline="bare dagster (@dg.asset + dg.AssetSpec, same keys, groups and deps)")
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    if config.sizes:
        sizes = {n: FULL_SIZES.get(n, 3) for n in config.sizes}
    sample = QUICK_CODE_SERVER_SAMPLE if config.quick else CODE_SERVER_SAMPLE
    for products, repeats in sizes.items():
        with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
            meshes = {flavor: generate(Path(tmp) / flavor, products, flavor, domains=DOMAINS) for flavor in FLAVOR_LABELS}
            _cases_for_size(result, products, meshes, repeats, sample, config)
        result.notes.append(_breakdown_note(result, f"{products} products"))
    result.add_ratios()
    for products in sizes:
        case = result.case("platform: load+snapshot", f"{products} products")
        result.targets.append(Target(f"platform load+snapshot <= {TARGET_RATIO}x bare dagster @ {products} products", TARGET_RATIO, "x", case.ratio))
    for products in sizes:
        case = result.case("platform: per code server", f"{products} products")
        result.targets.append(Target(f"platform per code server <= {RICH_TARGET_RATIO}x dagster + same metadata @ {products} products", RICH_TARGET_RATIO, "x", case.ratio if case else None))
        case = result.case("platform: load+snapshot", f"{products} products")
        rich = result.case("dagster + same metadata: load+snapshot", f"{products} products")
        if case and rich:
            result.targets.append(Target(f"platform load+snapshot <= {RICH_TARGET_RATIO}x dagster + same metadata @ {products} products", RICH_TARGET_RATIO, "x", case.seconds / rich.seconds))
    target_products, target_seconds = TARGET_SECONDS
    case = result.case("platform: load+snapshot", f"{target_products} products")
    result.targets.append(
        Target(f"platform load+snapshot of {target_products} products <= {target_seconds:g} s", target_seconds, "s", case.seconds if case else None)
    )
    result.notes.append(
        "load+snapshot excludes `import dagster` (every flavor pays it); `process` is the whole child process. "
        "'per code server' is the median over sampled domains, each loaded alone in its own process."
    )
    return result
