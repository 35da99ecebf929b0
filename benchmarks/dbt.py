"""dbt: a dbt-implemented domain run through Dagster and the platform, against a raw ``dbt build``.

Listed as **skipped** (with the reason) while no ``dbt_project.yml`` exists under ``dbt/``.

Setup, not timed: a fresh ``MESH_HOME`` where ``mesh materialize --scale S`` publishes the domains
the dbt project reads (every domain but the dbt one), and a DuckDB file holding the dbt sources
exactly as the platform stages them (the same governed read, the same columns). Then the same
``dbt build`` of the same project over the same data, four ways, each in two settings:

**fresh process** (what one run costs from nothing; ratios vs ``dbt build`` CLI):

``dbt build`` CLI (the baseline)
    ``dbt build`` in a fresh process on a copy of the project whose ``target/`` holds the prepared
    state (so dbt partial-parses, as a repeated build does), over a fresh copy of the staged sources.
``platform: fresh process``
    a fresh Python process that loads the dbt domain's code location, opens the SQLite Dagster
    instance and materializes its dbt products: staging the sources through the governed read
    path, ``dbt build``, every dbt test as an asset check, contract audit (GX report included)
    and atomic publish to the lake. This is what a run worker launched from the UI does.
``dagster floor: fresh process``
    the least any Dagster integration pays: the platform's asset and check specs (same keys, same
    checks) around nothing but an in-process ``dbt build`` on the prepared manifest, reporting
    every output and check result. The gap between it and the raw build is Dagster's own cost
    (run creation, one event-log write per event on the SQLite instance), not the platform's.
``dagster-dbt: fresh process``
    the same with stock dagster-dbt (``@dbt_assets`` + ``DbtCliResource.cli(["build"]).stream()``)
    and nothing of the platform: the reference the issue quotes (1.64x).

**warm run** (a loaded code location / ``mesh materialize``; ratios vs ``dbt build`` via dbtRunner):
the same, each repeated in one process after a warm-up: ``dbtRunner().invoke(["build"])``
(partial parsing, as dbt does by default), and ``materialize`` of the platform, of the floor and
of stock dagster-dbt.

Also measured once per project: a cold ``dbt parse`` (what ``mesh dbt prepare`` pays at setup,
never at definitions load) against ``dbt --version`` (dbt's start-up).

``--quick`` (a smoke test under a minute) runs only the warm runs of raw dbt, the platform and the
floor, once each in one process; the rest runs in full runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, RunConfig, run_command, run_isolated, run_isolated_calls
from benchmarks.results import BenchmarkResult, Case, Target
from benchmarks.whole_mesh import mesh_env

NAME = "dbt"
DESCRIPTION = "the dbt domain through Dagster + the platform vs a raw `dbt build` of the same project and data"
DBT_FOLDER = ROOT / "dbt"
IGNORED_PARTS = {"target", "dbt_packages", "logs", ".venv"}
DBT_DOMAIN = "analytics"
DBT_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}

TARGET_RATIO = 1.25
FULL_SCALES = {1.0: (1, 3), 10.0: (1, 2)}  # scale -> (warm-up, timed) per case
QUICK_SCALES = {0.5: (0, 1)}
"""0.5, not less: below it the fraud domain has too few labelled claims to train its model."""
FULL_PARSE_RUNS = (1, 3)
QUICK_SECONDS = 40  # rough duration of the quick run on a 2-core machine (the runner starts the slowest first)

RAW_CLI, PLATFORM, STOCK, FLOOR = "dbt build CLI", "platform", "dagster-dbt", "dagster floor"
RAW_WARM = "dbt build via dbtRunner"


def dbt_projects(folder: Path = DBT_FOLDER) -> list[Path]:
    """Folders holding a ``dbt_project.yml`` below ``folder`` (build output and packages ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p.parent for p in folder.rglob("dbt_project.yml") if not IGNORED_PARTS & set(p.relative_to(folder).parts))


def skip_reason() -> str | None:
    if not dbt_projects():
        return f"no dbt project under {DBT_FOLDER.relative_to(ROOT)}/ (no dbt_project.yml yet)"
    return None


def _dbt_executable() -> str:
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


def _copy_project(project: Path, dest: Path, with_state: bool) -> Path:
    """A copy of ``project`` at ``dest``; with its prepared ``target/`` (manifest and parse state)
    when ``with_state``, so dbt partial-parses as it does on a developer's machine."""
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns(*IGNORED_PARTS, ".user.yml"))
    if with_state:
        (dest / "target").mkdir()
        for name in ("manifest.json", "partial_parse.msgpack"):
            if (project / "target" / name).exists():
                shutil.copy2(project / "target" / name, dest / "target" / name)
    return dest


def _fresh_sources(staged: Path, folder: Path) -> Path:
    """A fresh copy of the staged sources (dbt writes its models into the same file), always at the
    same path for a given ``folder``: dbt's profile names the file, and a profile that changes
    between runs makes dbt re-parse the whole project, which raw dbt users do not pay."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / staged.name
    shutil.copy2(staged, copy)
    return copy


# -- children (fresh processes) ---------------------------------------------------------------


def stage_sources(project_dir: str, out_dir: str) -> dict[str, Any]:
    """Child: read every dbt source port of the dbt project into ``<out_dir>/<database>.duckdb``
    exactly as the platform's dbt step stages them; returns the file and its row counts."""
    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.dbt.plan import resolve_sources
    from mesh_platform.dbt.assets import stage_sources as stage
    from mesh_platform.dbt.project import DbtDomainProject
    from mesh_platform.storage.lake import Lake
    from mesh_platform.foundations.settings import MeshSettings

    project = DbtDomainProject(Path(project_dir))
    ports, problems = resolve_sources(project, mesh_registry(ROOT / "domains"), DBT_DOMAIN)
    if problems:
        raise RuntimeError(f"dbt sources do not resolve: {problems}")
    database = next(n["database"] for n in project.models().values())
    path = Path(out_dir) / f"{database}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    stage(project, DBT_DOMAIN, ports, set(ports), path, Lake(MeshSettings.from_env().lake))
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        rows = {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0]
                for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    return {"path": str(path), "rows": rows}


def _platform_job():
    """The dbt domain's code location as a run worker loads it, and its dbt products' keys."""
    import importlib

    defs = importlib.import_module(f"domains.{DBT_DOMAIN}.definitions").defs
    dbt_defs = [a for a in defs.assets if getattr(a, "op", None) is not None and a.op.name == f"{DBT_DOMAIN}_dbt"]
    return defs, dbt_defs


def _stock_assets(project_dir: Path):
    """Stock dagster-dbt over the same project: ``@dbt_assets`` + ``DbtCliResource``, default translator."""
    from dagster_dbt import DbtCliResource, dbt_assets

    @dbt_assets(manifest=project_dir / "target" / "manifest.json", name="stock_dbt", required_resource_keys={"dbt"})
    def stock_dbt(context):
        yield from context.resources.dbt.cli(["build"], context=context).stream()

    return stock_dbt, DbtCliResource(project_dir=str(project_dir), profiles_dir=str(project_dir), dbt_executable=_dbt_executable())


def _floor_assets(project_dir: Path):
    """The least any Dagster integration of this project pays: the platform's asset and check specs
    (same keys, same 27 checks), a body that only runs ``dbt build`` in-process on the prepared
    manifest and reports outputs and check results. No staging, no audit, no publish."""
    import dagster as dg
    from dbt.cli.main import dbtRunner

    from mesh_platform.dbt.project import DbtDomainProject

    _, (platform,) = _platform_job()
    project = DbtDomainProject(project_dir)

    @dg.multi_asset(specs=list(platform.specs), check_specs=list(platform.check_specs), name="floor_dbt")
    def floor_dbt(context):
        args = ["build", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--quiet"]
        result = dbtRunner(manifest=project.dbt_manifest()).invoke(args)
        if not result.success:
            raise RuntimeError(f"dbt build failed: {result.exception}")
        for key in context.selected_asset_keys:
            yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_key(key))
        for check in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return floor_dbt


def _flavor(flavor: str, project_copy: Path) -> tuple[list, dict]:
    """(assets, resources) of a Dagster flavor."""
    if flavor == PLATFORM:
        defs, assets = _platform_job()
        return assets, dict(defs.resources or {})
    if flavor == FLOOR:
        return [_floor_assets(project_copy)], {}
    stock, resource = _stock_assets(project_copy)
    return [stock], {"dbt": resource}


def _materialize(assets, resources, instance, staged: Path, folder: Path) -> float:
    """One run of ``assets``; dagster-dbt's dbt reads the sources from a fresh copy in ``folder``
    (the platform stages its own, per run, through the governed read path)."""
    import dagster as dg

    os.environ["MESH_DBT_DUCKDB"] = str(_fresh_sources(staged, folder))
    started = time.perf_counter()
    result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False)
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"materialize failed: {[e.message for e in result.all_events if e.is_failure]}")
    return seconds


def fresh_run(flavor: str, staged: str, project_copy: str) -> dict[str, Any]:
    """Child: one run from nothing, timed by phase (the process time is measured by the parent)."""
    started = time.perf_counter()
    import dagster as dg

    phases: dict[str, float] = {"import_dagster": time.perf_counter() - started}
    mark = time.perf_counter()
    assets, resources = _flavor(flavor, Path(project_copy))
    phases["load_definitions"] = time.perf_counter() - mark
    mark = time.perf_counter()
    instance = dg.DagsterInstance.get()
    phases["instance"] = time.perf_counter() - mark
    phases["materialize"] = _materialize(assets, resources, instance, Path(staged), Path(project_copy).parent / "runs" / flavor)
    return {"phases_s": {k: round(v, 3) for k, v in phases.items()}}


def warm_runs(flavor: str, staged: str, project_copy: str, warmup: int, repeats: int) -> dict[str, Any]:
    """Child: ``warmup`` + ``repeats`` runs in one process (definitions loaded once); timed runs' seconds."""
    import dagster as dg

    samples = []
    if flavor == RAW_WARM:
        from dbt.cli.main import dbtRunner

        project = Path(project_copy)
        args = ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"]
        for _ in range(warmup + repeats):
            os.environ["MESH_DBT_DUCKDB"] = str(_fresh_sources(Path(staged), Path(project_copy).parent / "runs" / "dbtRunner"))
            mark = time.perf_counter()
            outcome = dbtRunner().invoke(args)
            samples.append(time.perf_counter() - mark)
            if not outcome.success:
                raise RuntimeError(f"dbt build failed: {outcome.exception}")
        return {"samples_s": [round(s, 4) for s in samples[warmup:]]}
    assets, resources = _flavor(flavor, Path(project_copy))
    instance = dg.DagsterInstance.get()
    for _ in range(warmup + repeats):
        samples.append(_materialize(assets, resources, instance, Path(staged), Path(project_copy).parent / "runs" / flavor))
    return {"samples_s": [round(s, 4) for s in samples[warmup:]]}


# -- the parent ---------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _build_cases(result: BenchmarkResult, config: RunConfig, project: Path, scale: float, warmup: int, repeats: int) -> None:
    size = f"scale {scale:g}"
    with tempfile.TemporaryDirectory(prefix="bench-dbt-home-") as home:
        env = {**mesh_env(home), **DBT_ENV, "DAGSTER_HOME": str(Path(home) / "dagster")}
        upstream = sorted(p.name for p in (ROOT / "domains").iterdir() if (p / "domain.yaml").exists() and p.name != DBT_DOMAIN)
        config.log(f"  {NAME}: setup @ {size}: materialize {', '.join(upstream)}")
        run_command([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", "--scale", f"{scale:g}", "--select", ",".join(upstream)], env=env, cwd=ROOT)
        staged = run_isolated(f"{__name__}:stage_sources", {"project_dir": str(project), "out_dir": str(Path(home) / "staged")}, env=env)
        project_copy = _copy_project(project, Path(home) / "project", with_state=True)
        staged_path = Path(staged["path"])
        env["MESH_DBT_DUCKDB"] = str(staged_path)

        def raw_cli() -> dict[str, Any]:
            db = _fresh_sources(staged_path, Path(home) / "runs" / "cli")
            return run_command([_dbt_executable(), "build", "--project-dir", str(project_copy), "--profiles-dir", str(project_copy)],
                               env={**env, "MESH_DBT_DUCKDB": str(db)}, cwd=project_copy)

        # quick (a smoke test under a minute): no fresh processes, the warm runs below exercise the flavors
        fresh: dict[str, list[dict[str, Any]]] = {label: [] for label in (() if config.quick else (RAW_CLI, PLATFORM, FLOOR, STOCK))}
        for round_ in range(warmup + repeats):  # interleaved, so a burst of other load hits every case alike
            for label in fresh:
                config.log(f"  {NAME}: {label} (fresh process) @ {size} ({round_ + 1}/{warmup + repeats})")
                if label == RAW_CLI:
                    ran = raw_cli()
                    ran = {"process_wall_s": ran["wall_s"], "process_cpu_s": ran["cpu_s"], "peak_rss_mb": ran["peak_rss_mb"]}
                else:
                    ran = run_isolated(f"{__name__}:fresh_run", {"flavor": label, "staged": str(staged_path), "project_copy": str(project_copy)}, env=env)
                fresh[label].append(ran)
        for label, runs in fresh.items():
            timed = runs[warmup:]
            details: dict[str, Any] = {"samples_s": [r["process_wall_s"] for r in timed], "source_rows": staged["rows"]}
            if "phases_s" in timed[0]:
                details["phases_median_s"] = {k: _median([r["phases_s"][k] for r in timed]) for k in timed[0]["phases_s"]}
            name = RAW_CLI if label == RAW_CLI else f"{label}: fresh process"
            result.cases.append(
                Case(name, size, _median(details["samples_s"]), None if label == RAW_CLI else RAW_CLI,
                     cpu_seconds=_median([r["process_cpu_s"] for r in timed]), peak_rss_mb=max(r["peak_rss_mb"] for r in timed), details=details)
            )
        # quick (a smoke test under a minute): stock dagster-dbt, ~10 s a run, only in full runs
        warm_labels = (RAW_WARM, PLATFORM, FLOOR) if config.quick else (RAW_WARM, PLATFORM, FLOOR, STOCK)
        calls = [(f"{__name__}:warm_runs", {"flavor": label, "staged": str(staged_path), "project_copy": str(project_copy),
                                            "warmup": warmup, "repeats": repeats}) for label in warm_labels]
        if config.quick:  # a smoke test: one process for every flavor (figures mean nothing)
            config.log(f"  {NAME}: warm runs of every flavor in one process @ {size}")
            warm = run_isolated_calls(calls, env=env)
        else:
            warm = []
            for label, call in zip(warm_labels, calls):
                config.log(f"  {NAME}: {label} (warm, {warmup} warm-up + {repeats} run(s) in one process) @ {size}")
                warm.extend(run_isolated_calls([call], env=env))
        for label, ran in zip(warm_labels, warm):
            name = RAW_WARM if label == RAW_WARM else f"{label}: warm run"
            result.cases.append(Case(name, size, _median(ran["samples_s"]), None if label == RAW_WARM else RAW_WARM,
                                     peak_rss_mb=ran["peak_rss_mb"], details={"samples_s": ran["samples_s"]}))


def _time_dbt(project: Path, args: list[str], warmup: int, repeats: int) -> tuple[float, float, float, list[float]]:
    """(median wall s, median CPU s, peak RSS MiB, wall samples) of ``dbt <args>`` on a fresh copy of ``project``."""
    samples, cpus, peak = [], [], 0.0
    for _ in range(warmup + repeats):
        with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp:
            copy = _copy_project(project, Path(tmp) / project.name, with_state=False)
            ran = run_command([_dbt_executable(), *args, "--profiles-dir", str(copy)], cwd=copy, env=DBT_ENV)
        samples.append(ran["wall_s"])
        cpus.append(ran["cpu_s"])
        peak = max(peak, ran["peak_rss_mb"])
    timed = samples[warmup:]
    return _median(timed), round(statistics.median(cpus[warmup:]), 3), peak, timed


def _parse_cases(result: BenchmarkResult, config: RunConfig, project: Path) -> None:
    warmup, repeats = FULL_PARSE_RUNS
    size = f"project {project.name}"
    for label, args in (("dbt --version", ["--version"]), ("dbt parse (cold, = mesh dbt prepare)", ["parse", "--no-partial-parse"])):
        config.log(f"  {NAME}: {label} @ {size}")
        if args == ["--version"]:
            samples = []
            for _ in range(warmup + repeats):
                ran = run_command([_dbt_executable(), "--version"], env=DBT_ENV)
                samples.append(ran)
            timed = samples[warmup:]
            result.cases.append(Case(label, size, _median([r["wall_s"] for r in timed]), cpu_seconds=_median([r["cpu_s"] for r in timed]),
                                     peak_rss_mb=max(r["peak_rss_mb"] for r in timed)))
        else:
            median, cpu, peak, timed = _time_dbt(project, args, warmup, repeats)
            result.cases.append(Case(label, size, median, "dbt --version", cpu_seconds=cpu, peak_rss_mb=peak, details={"samples_s": timed}))


def run(config: RunConfig, projects: list[Path] | None = None) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="a raw `dbt build` of the same project over the same staged sources (CLI for fresh processes, dbtRunner for warm runs)")
    projects = projects or dbt_projects()
    project = next((p for p in projects if p.name == DBT_DOMAIN), projects[0])
    for scale, (warmup, repeats) in (QUICK_SCALES if config.quick else FULL_SCALES).items():
        _build_cases(result, config, project, scale, warmup, repeats)
    if not config.quick:  # plain CLI timings, ~8 s: full runs only
        for each in projects:
            _parse_cases(result, config, each)
    result.add_ratios()
    for case in result.cases:
        if case.name in (f"{PLATFORM}: fresh process", f"{PLATFORM}: warm run"):
            result.targets.append(Target(f"{case.name} <= {TARGET_RATIO}x {case.baseline} @ {case.size}", TARGET_RATIO, "x", case.ratio))
    for case in result.cases:
        floor = result.case(case.name.replace(PLATFORM, FLOOR, 1), case.size) if case.name.startswith(f"{PLATFORM}:") else None
        if floor and floor.seconds and floor.ratio is not None:
            result.notes.append(
                f"{case.name} @ {case.size}: {case.seconds / floor.seconds:.2f}x the {floor.name} ({floor.seconds:.2f} s), "
                f"which alone is {floor.ratio:.2f}x {floor.baseline}: Dagster's own cost per run (run creation, planned and "
                f"reported events written one by one to the SQLite instance) before the platform adds anything"
            )
    for case in result.cases:
        phases = case.details.get("phases_median_s")
        if phases:
            result.notes.append(f"{case.name} @ {case.size}: phases (median s) " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    return result
