"""run_floor: the whole mesh's runs against plain Dagster doing the same runs with near-empty bodies.

The **floor** is what Dagster itself costs for the mesh's work: the same runs (the platform's own
run plan: one per domain and ready batch, in the same order, with the same partition-range tags),
the same assets with the same dependencies and daily partitions, the same number of asset checks
per asset, each body returning at once (a ``MaterializeResult`` with every check passed). Its
definitions are built from the real mesh's asset graph, written to JSON, and run by a fresh
interpreter that imports only Dagster.

The **platform** is ``mesh materialize --in-process`` of the demo mesh at scale 1 in a fresh
interpreter and ``MESH_HOME``, over sources simulated beforehand (not measured). Both measure CPU
seconds of the whole process (import, definitions, runs, on a fresh SQLite instance): the ratio is
what the platform adds per mesh refresh beyond Dagster (contracts, checks, quality, masking,
audit, Delta commits, dbt, the model). Target (issue "the per-run floor"): <= 2x.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, RunConfig, run_command, run_isolated
from benchmarks.results import BenchmarkResult, Case, Target
from benchmarks.whole_mesh import mesh_env

NAME = "run_floor"
DESCRIPTION = "whole mesh at scale 1 (`mesh materialize --in-process`) vs plain Dagster with the same runs, assets, checks and partitions (CPU s)"
FULL = (1, 2)  # warm-up, timed
QUICK = (0, 1)
QUICK_SECONDS = 35  # rough duration of the quick run (2 cores): simulating, then the platform and its floor at scale 0.2
SCALE = 1.0
QUICK_SCALE = 0.2
QUICK_SELECT = "policies,claims,customer_care"
"""A quick run (a smoke test whose figures mean nothing) measures the three source-aligned domains at
a tiny scale: the same code path (the run plan, partition-range tags, the floor's definitions, the
platform's CLI run) for a fifth of the work; fraud needs more data than this to train its model."""
TARGET_RATIO = 2.0

FLOOR_SCRIPT = r'''
import json, sys, tempfile, time
import dagster as dg

plan = json.load(open(sys.argv[1]))


def body(checks):
    def compute(context):
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name=c, passed=True) for c in checks])
    return compute


def partitions(p):
    return None if p is None else dg.DailyPartitionsDefinition(start_date=p["start"], end_offset=p["end_offset"], timezone=p["timezone"])


defs = {}
for domain, assets in plan["domains"].items():
    built = []
    for a in assets:
        key = dg.AssetKey(a["key"])
        built.append(dg.asset(
            key=key, deps=[dg.AssetKey(d) for d in a["deps"]], group_name=domain,
            check_specs=[dg.AssetCheckSpec(c, asset=key) for c in a["checks"]],
            partitions_def=partitions(a["partitions"]),
            backfill_policy=dg.BackfillPolicy.single_run() if a["partitions"] else None,
        )(body(a["checks"])))
    external = [dg.AssetSpec(dg.AssetKey(k)) for k in plan["external"][domain]]
    defs[domain] = dg.Definitions(assets=[*built, *external])

in_runs = 0.0
with tempfile.TemporaryDirectory() as home:
    with dg.instance_for_test(temp_dir=home) as instance:
        for run in plan["runs"]:
            job = defs[run["domain"]].resolve_implicit_global_asset_job_def()
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(k) for k in run["keys"]], tags=run["tags"],
                                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
            in_runs += time.perf_counter() - started
            assert result.success, run
print(json.dumps({"runs": len(plan["runs"]), "in_runs_s": round(in_runs, 3)}))
'''


def _partitions(definition) -> dict | None:
    if definition is None:
        return None
    return {"start": definition.start.strftime("%Y-%m-%d"), "end_offset": definition.end_offset, "timezone": definition.timezone or "UTC"}


def floor_plan(home: str, select: str | None = None, days: tuple[str, str] | None = None) -> dict[str, Any]:
    """The mesh's assets, checks, partitions and the platform's own run plan (of ``select``, as
    ``mesh materialize --select`` reads it, default the whole mesh; ``days``: the partition range,
    as ``--from``/``--to``), as JSON for the floor."""
    return floor_plans(home, [(select, days)])[0]


def floor_plans(home: str, requests: list[tuple[str | None, tuple[str, str] | None]]) -> list[dict[str, Any]]:
    """:func:`floor_plan` of each ``(select, days)``, worked out in one fresh interpreter under
    ``home`` (:func:`plans_of_mesh`): loading the mesh sets the process's environment, and a quick
    run measures two benchmarks at a time in threads of one process."""
    found = run_isolated("benchmarks.run_floor:plans_of_mesh", {"requests": [[select, list(days) if days else None] for select, days in requests]},
                         env=mesh_env(home))
    return [{"domains": found["domains"], "external": found["external"], "runs": runs} for runs in found["runs"]]


def plans_of_mesh(requests: list[list]) -> dict[str, Any]:
    """:func:`floor_plans` inside the fresh interpreter (``MESH_HOME`` and the rest set by the caller)."""
    import dagster as dg

    from mesh_platform.mesh.materialize import RunOutcome, materialize, select as resolve_selection
    from mesh_platform.mesh.workspace import Mesh

    mesh = Mesh.load(ROOT / "workspace.yaml")
    domains, external = {}, {}
    for loaded in mesh.domains:
        graph = loaded.defs.resolve_asset_graph()
        assets = []
        for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
            node = graph.get(key)
            assets.append({"key": list(key.path), "deps": [list(p.path) for p in sorted(node.parent_keys, key=str)],
                           "checks": sorted(c.name for c in node.check_keys), "partitions": _partitions(node.partitions_def)})
        domains[loaded.entry.location] = assets
        external[loaded.entry.location] = [list(k.path) for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable]

    class Recorder:
        parallel = False

        def __init__(self):
            self.runs = []

        def start(self, domain, keys, tags):
            self.runs.append({"domain": domain, "keys": [list(k.path) for k in keys], "tags": tags})
            self.last = RunOutcome(domain, keys, True, str(len(self.runs)), 0.0, materialized=set(keys))
            return self.last.run_id

        def wait_any(self, run_ids):
            return self.last

    planned = []
    for select, days in requests:
        recorder = Recorder()
        with dg.instance_for_test() as instance:
            materialize(mesh, resolve_selection(mesh, select), instance, runner=recorder, days=tuple(days) if days else None)
        planned.append(recorder.runs)
    return {"domains": domains, "external": external, "runs": planned}


def _measure_platform(scale: float, select: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-floor-home-") as home:
        run_command([sys.executable, "-m", "mesh_platform.cli", "simulate", "--scale", f"{scale:g}"], env=mesh_env(home), cwd=ROOT)
        ran = run_command([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", *(["--select", select] if select else [])],
                          env=mesh_env(home), cwd=ROOT)
    return {"wall_s": ran["wall_s"], "cpu_s": ran["cpu_s"], "peak_rss_mb": ran["peak_rss_mb"]}


def measure_floor(plan_file: Path) -> dict[str, Any]:
    """Run the floor of ``plan_file`` in a fresh interpreter; ``in_runs_s``: the seconds inside its runs."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        script = Path(tmp) / "floor.py"
        script.write_text(FLOOR_SCRIPT)
        ran = run_command([sys.executable, str(script), str(plan_file)], cwd=Path(tmp))
    in_runs = json.loads(ran["stdout"].strip().splitlines()[-1])["in_runs_s"]
    return {"wall_s": ran["wall_s"], "cpu_s": ran["cpu_s"], "peak_rss_mb": ran["peak_rss_mb"], "in_runs_s": in_runs}


def run(config: RunConfig) -> BenchmarkResult:
    import statistics

    result = BenchmarkResult(NAME, DESCRIPTION, baseline="plain Dagster: the same runs, assets, checks and partitions, near-empty bodies")
    warmup, repeats = QUICK if config.quick else FULL
    scale = QUICK_SCALE if config.quick else SCALE
    select = QUICK_SELECT if config.quick else None
    size = f"scale {scale:g}" + (f", {select}" if select else "")
    with tempfile.TemporaryDirectory(prefix="bench-floor-plan-") as tmp:
        plan = floor_plan(str(Path(tmp) / "home"), select)
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        config.log(f"  {NAME}: {len(plan['runs'])} runs, {sum(len(a) for a in plan['domains'].values())} assets, "
                   f"{sum(len(x['checks']) for a in plan['domains'].values() for x in a)} checks")
        floor = [measure_floor(plan_file) for _ in range(warmup + repeats)][warmup:]
    platform = [_measure_platform(scale, select) for _ in range(warmup + repeats)][warmup:]
    counts = {"runs": len(plan["runs"]), "assets": sum(len(a) for a in plan["domains"].values()),
              "checks": sum(len(x["checks"]) for a in plan["domains"].values() for x in a)}
    for name, measured, baseline in (("plain Dagster floor", floor, None), ("platform", platform, "plain Dagster floor")):
        cpu = round(statistics.median(m["cpu_s"] for m in measured), 3)
        case = Case(name, size, cpu, baseline, cpu_seconds=cpu, peak_rss_mb=max(m["peak_rss_mb"] for m in measured),
                    details={**counts, "wall_s": [m["wall_s"] for m in measured], "cpu_s": [m["cpu_s"] for m in measured]})
        result.cases.append(case)
    result.add_ratios()  # seconds here are CPU seconds: robust to the machine's other load
    platform_case = result.case("platform", size)
    result.targets.append(Target(f"platform <= {TARGET_RATIO}x the plain Dagster floor (CPU s) @ {size}", TARGET_RATIO, "x", platform_case.ratio))
    return result
