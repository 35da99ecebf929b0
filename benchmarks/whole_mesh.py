"""whole_mesh: materialize the real demo mesh end to end at growing scales.

Each run is ``python -m mesh_platform.cli materialize --scale S`` in a fresh process with
``MESH_HOME`` set to a new temporary folder (so it simulates the sources, loads the five domains,
and materializes every product into a fresh lake and a fresh SQLite Dagster instance). Reported:
wall time and peak RSS of that process, and the growth against scale 1 (linear growth would be
10x at scale 10 and 100x at scale 100). The CLI's own per-run progress lines (``ok in 1.2s``)
give the time spent inside the Dagster runs; the rest is simulation, imports and mesh loading.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
from typing import Any

from benchmarks.harness import ROOT, RunConfig, run_command
from benchmarks.results import BenchmarkResult, Case

NAME = "whole_mesh"
DESCRIPTION = "`mesh materialize --scale S` of the demo mesh in a fresh process: time and peak memory vs scale"
BASE_SCALE = 1.0

# scale -> (warm-up runs, timed runs). Scale 100 runs once: it fits the ~20 minute budget of the
# full run on 2 cores (see README), more repeats would not.
FULL_SCALES = {1.0: (1, 2), 10.0: (0, 2), 100.0: (0, 1)}
QUICK_SCALES = {0.5: (0, 1)}
QUICK_SECONDS = 30  # rough duration of the quick run on a 2-core machine (the runner starts the slowest first)
"""Not 0.2: below ~0.5 the fraud domain has too few labelled claims to train its model and fails."""
RUN_LINE = re.compile(r"^\s+(?:[a-z_]+: )?(ok|FAILED) in ([0-9.]+)s")  # "    policies: ok in 1.2s"
ROWS = re.compile(r"([a-z_]+) ([0-9,]+) rows")


INHERITED = ("MESH_LAKE", "MESH_SOURCES", "DAGSTER_HOME", "MESH_DOMAINS", "POLICY_ADMIN_DB_URL", "CLAIMS_LANDING_DIR", "SUPPORT_CHAT_EXPORT_DIR")


def mesh_env(home: str) -> dict[str, str | None]:
    """Everything under a fresh MESH_HOME: never a caller's lake, sources or Dagster instance."""
    return {"MESH_HOME": home, "MESH_WORKSPACE": str(ROOT / "workspace.yaml"), **{var: None for var in INHERITED}}


def materialize_once(scale: float) -> dict[str, Any]:
    """One ``mesh materialize --scale`` in a fresh process and a fresh MESH_HOME."""
    with tempfile.TemporaryDirectory(prefix="bench-mesh-home-") as home:
        ran = run_command([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", "--scale", f"{scale:g}"], env=mesh_env(home), cwd=ROOT)
    runs = [float(m.group(2)) for m in map(RUN_LINE.match, ran["stdout"].splitlines()) if m]
    rows = {name: int(n.replace(",", "")) for name, n in ROWS.findall(ran["stdout"])}
    return {"wall_s": ran["wall_s"], "cpu_s": ran["cpu_s"], "peak_rss_mb": ran["peak_rss_mb"], "dagster_runs_s": round(sum(runs), 3), "runs": len(runs), "rows": rows}


def _scale_label(scale: float) -> str:
    return f"scale {scale:g}"


def run(config: RunConfig) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline=f"the same command at scale {BASE_SCALE:g} (quick: the smallest scale)")
    scales = QUICK_SCALES if config.quick else FULL_SCALES
    base_scale = min(scales)
    for scale, (warmup, repeats) in scales.items():
        config.log(f"  {NAME}: {_scale_label(scale)} ({warmup} warm-up + {repeats} run(s))")
        measured = [materialize_once(scale) for _ in range(warmup + repeats)][warmup:]
        wall = statistics.median(m["wall_s"] for m in measured)
        details = {
            "scale": scale,
            "samples_s": [m["wall_s"] for m in measured],
            "dagster_runs_s_median": round(statistics.median(m["dagster_runs_s"] for m in measured), 3),
            "rows": measured[0]["rows"],
        }
        baseline = None if scale == base_scale else _scale_label(base_scale)
        peak = max(m["peak_rss_mb"] for m in measured)
        cpu = round(statistics.median(m["cpu_s"] for m in measured), 3)
        result.cases.append(Case(_scale_label(scale), f"x{scale:g} data", round(wall, 3), baseline, cpu_seconds=cpu, peak_rss_mb=peak, details=details))
    _ratios_against_base(result, _scale_label(base_scale))
    return result


def _ratios_against_base(result: BenchmarkResult, base_name: str) -> None:
    """Growth vs the base scale (sizes differ on purpose here, so ``add_ratios`` does not apply)."""
    base = next(c for c in result.cases if c.name == base_name)
    for case in result.cases:
        case.ratio = round(case.seconds / base.seconds, 3)
        data_growth = case.details["scale"] / base.details["scale"]
        case.details["data_growth"] = data_growth
        case.details["memory_growth"] = round(case.peak_rss_mb / base.peak_rss_mb, 3)
        case.details["dagster_runs_growth"] = round(case.details["dagster_runs_s_median"] / base.details["dagster_runs_s_median"], 3)
        if case is not base:
            result.notes.append(
                f"{case.name}: {data_growth:g}x the data took {case.ratio:.2f}x the time "
                f"(time inside Dagster runs {case.details['dagster_runs_growth']:.2f}x) and {case.details['memory_growth']:.2f}x the peak memory"
            )
