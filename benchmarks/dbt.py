"""dbt: the cost of a dbt-implemented domain's project under ``dbt/``.

Listed as **skipped** (with the reason) while no ``dbt_project.yml`` exists under ``dbt/``.
Otherwise each project is measured with the dbt CLI, in fresh processes, on a temporary copy of
the project (its ``target/`` and ``logs/`` left out), so nothing is ever written into the repo:

``dbt --version`` (the baseline)
    starting dbt at all: interpreter, dbt-core and adapter imports.
``dbt parse``
    a cold parse (``--no-partial-parse``) writing ``manifest.json``: what ``mesh dbt prepare``
    pays at setup (the platform never parses when definitions load).

Add cases (``dbt build`` against staged input ports, the code location's load) to
:data:`COMMANDS` or as new functions once the project's wiring settles.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, RunConfig, run_command
from benchmarks.results import BenchmarkResult, Case

NAME = "dbt"
DESCRIPTION = "dbt projects under dbt/: cold `dbt parse` vs dbt start-up"
BASELINE = "dbt --version"
DBT_FOLDER = ROOT / "dbt"
IGNORED_PARTS = {"target", "dbt_packages", "logs", ".venv"}

# label -> dbt arguments; {tmp} is a temporary folder
COMMANDS: dict[str, list[str]] = {
    BASELINE: ["--version"],
    "dbt parse": ["parse", "--no-partial-parse", "--target-path", "{tmp}/target", "--log-path", "{tmp}/logs"],
}
FULL_RUNS = (1, 3)  # (warm-up, timed)
QUICK_RUNS = (0, 1)
QUICK_SECONDS = 15  # rough duration of the quick run (the runner starts the slowest first)


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


def _time_dbt(project: Path, args: list[str], warmup: int, repeats: int) -> tuple[float, float, float, list[float]]:
    """(median wall s, median CPU s, peak RSS MiB, wall samples) of ``dbt <args>`` on a copy of ``project``."""
    samples, cpus, peak = [], [], 0.0
    for _ in range(warmup + repeats):
        with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp:
            copy = Path(tmp) / project.name
            shutil.copytree(project, copy, ignore=shutil.ignore_patterns(*IGNORED_PARTS, ".user.yml"))
            argv = [_dbt_executable(), *(a.replace("{tmp}", tmp) for a in args)]
            if args[0] != "--version" and (copy / "profiles.yml").exists():
                argv += ["--profiles-dir", str(copy)]
            ran = run_command(argv, cwd=copy, env={"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PROFILES_DIR": str(copy)})
        samples.append(ran["wall_s"])
        cpus.append(ran["cpu_s"])
        peak = max(peak, ran["peak_rss_mb"])
    timed = samples[warmup:]
    return round(statistics.median(timed), 4), round(statistics.median(cpus[warmup:]), 3), peak, timed


def run(config: RunConfig, projects: list[Path] | None = None) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline=f"`{BASELINE}` (dbt start-up) in the same project folder")
    warmup, repeats = QUICK_RUNS if config.quick else FULL_RUNS
    for project in projects or dbt_projects():
        size = f"project {project.name}"
        for label, args in COMMANDS.items():
            config.log(f"  {NAME}: {label} @ {size}")
            median, cpu, peak, samples = _time_dbt(project, args, warmup, repeats)
            base = None if label == BASELINE else BASELINE
            result.cases.append(Case(label, size, median, base, cpu_seconds=cpu, peak_rss_mb=peak, details={"samples_s": samples, "project": str(project)}))
    result.add_ratios()
    return result
