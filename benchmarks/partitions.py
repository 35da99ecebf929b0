"""partitions: one new day of claims through claims -> fraud -> analytics, against a full rebuild.

The demo mesh in a fresh ``MESH_HOME`` per history length: the sources are simulated at ``scale``
(once, copied to each home), then the claims landing zone is rewritten as the claims system's daily
export: one file of the claims reported that day and one of the claim events that happened that
day, for the days of history before :data:`FIRST_NEW_DAY`, and everything is materialized once over
them (setup). Then each round lands the next new day (:data:`FIRST_NEW_DAY`, the day after, ...),
and its two timed cases are each one ``mesh materialize --in-process`` in a fresh process over
claims and everything downstream of it (fraud, and the analytics marts that read claims or fraud;
not contact_topics, which reads only customer_care and which neither a landing nor automation would
refresh for a new day of claims; ``--quick``: the claims domain alone, over policies and claims,
see :data:`QUICK`):

``new day``
    ``--partition <the round's day>`` over ``claims*,-fraud/fraud_model``: what automation runs for
    a landed day (docs/automation.md): the claims products and fraud's features and scores of that
    day only (the new claims, and the events that happened that day), scored with the current
    model, which retrains on its own schedule, not per day; the analytics marts are rebuilt whole in
    both cases (docs/automation.md says why). Each round's day is one the ports do not hold yet, as
    a landed day is: replacing a day that an earlier run wrote together with other days rewrites
    their files too, which is not what a new day costs.
``full rebuild`` (the baseline)
    ``--from <first day> --to <the round's day>``: every day of the history and the new days again,
    the model retrained.

The pair runs at each length of :data:`HISTORIES`; the target is judged at the longest. What a day
costs beyond its data is the three runs' fixed work (loading inputs, checks, events, dbt's own
work per model and test): ``docs/automation.md`` ("One new day against a full rebuild").

Reported per case: wall time of the command, and the time inside the Dagster runs (the CLI's
per-domain ``ok in N s`` lines; the rest is loading the mesh, the same in both). Beside each, the
**plain-Dagster floor** of the same case (:mod:`benchmarks.run_floor`): the runs the platform plans
for it (same domains, assets, asset checks, daily partitions and partition-range tags), each body
returning at once, on a fresh SQLite instance. What the floor takes inside its runs is Dagster's
own cost of the case (run creation, planned and stored events: about 60 ms an asset check here),
which no platform can go below; the notes give both ratios, with and without it. The libraries the
steps import (dbt, Delta Lake, scikit-learn) are imported before the first run, as a deployed code
server does for its runs (:mod:`mesh_platform.deployment.run_preload`). The cases alternate (new
day, full rebuild, next new day, ...) so that load on the machine hits both alike.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, RunConfig, run_command
from benchmarks.results import BenchmarkResult, Case, Target
from benchmarks.whole_mesh import RUN_LINE, mesh_env

NAME = "partitions"
DESCRIPTION = "one new daily partition through claims -> fraud -> analytics vs a full rebuild of 30 and of 180 days of history"
FIRST_NEW_DAY = "2026-11-24"  # near the simulation's last day (2026-11-30), so that up to 200 days of history precede it; the five rounds' days end two days before the simulation's (claims reported on its last days are fewer: their incidents are cut off)
HISTORIES = (30, 180)  # days of history before the new day; the target is judged at the longest
TARGET_RATIO = 1 / 10  # the automation issue's target: a new day at most a tenth of a full rebuild, inside the runs
FULL = {"scale": 1000.0, "repeats": 5, "setup": None, "select": "claims*", "new_day": "claims*,-fraud/fraud_model", "histories": HISTORIES}  # ~6,000 claims on a new day (the book grows: ~3,000 a day over 180 days); policies 1.5M rows; five rounds: one round's runs move by half a second with the load of the machine (a round's new day has taken 3.6 to 5.8 s at 180 days), and the median of five is steadier than of three
# a quick run is a smoke test whose figures mean nothing: the claims domain alone (the same commands,
# days and partition-range runs) at a tiny scale; downstream, fraud's model would need ~5x the data
QUICK = {"scale": 1.0, "repeats": 1, "setup": "policies,claims", "select": "claims", "new_day": "claims", "histories": (30,)}
QUICK_SECONDS = 30  # rough duration of the quick run on 2 cores, its floor included (the runner starts the slowest first)


def _mesh(args: list[str], home: str) -> dict[str, Any]:
    ran = run_command([sys.executable, "-m", "mesh_platform.cli", *args], env=mesh_env(home), cwd=ROOT, timeout=3600)
    ran["in_runs_s"] = round(sum(float(m.group(2)) for m in map(RUN_LINE.match, ran["stdout"].splitlines()) if m), 3)
    return ran


def daily_landing(folder: Path, days: list[str]) -> dict[str, int]:
    """Rewrite the simulated landing zone as the claims system's daily export for ``days``: the
    claims reported that day, and the events of those claims that happened that day (an event of a
    claim reported on an earlier day of ``days`` lands with the day it happened); returns the
    claims per day."""
    import pandas as pd

    claims = pd.concat([pd.read_csv(f, dtype=str) for f in sorted(folder.glob("claims_batch_*.csv"))], ignore_index=True)
    events = pd.concat([pd.read_json(f, lines=True, dtype={"claim_ref": str}) for f in sorted(folder.glob("claim_events_batch_*.jsonl"))], ignore_index=True)
    for old in folder.glob("*"):
        old.unlink()
    reported = pd.to_datetime(claims["reported_at"]).dt.strftime("%Y-%m-%d")
    claims = claims[reported.isin(days)]
    events = events[events["claim_ref"].isin(claims["claim_ref"])]
    happened = pd.to_datetime(events["at"])
    events = events.assign(at=happened.dt.strftime("%Y-%m-%dT%H:%M:%S"))
    counts = {}
    for d in days:
        batch = claims[reported[claims.index] == d]
        counts[d] = len(batch)
        batch.to_csv(folder / f"claims_day_{d}.csv.hold", index=False)
        events[happened.dt.strftime("%Y-%m-%d") == d].to_json(folder / f"claim_events_day_{d}.jsonl.hold", orient="records", lines=True)
    return counts


def land(folder: Path, day: str) -> None:
    for held in folder.glob(f"*_day_{day}.*.hold"):
        held.rename(held.with_suffix(""))


def step_seconds(dagster_home: Path, first_day: str, new_days: list[str]) -> dict[str, dict[str, float]]:
    """Per case, the median seconds of each step (by asset) over its timed runs, from the instance."""
    import dagster as dg

    found: dict[str, dict[str, list[float]]] = {"new day": {}, "full rebuild": {}}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for record in instance.get_run_records(limit=200):
            tags = record.dagster_run.tags
            start = tags.get("dagster/asset_partition_range_start")
            case = "new day" if start in new_days else "full rebuild" if start == first_day and tags.get("mesh/domain") else None
            if case is None:
                continue
            for stat in instance.get_run_step_stats(record.dagster_run.run_id):
                if stat.start_time and stat.end_time:
                    found[case].setdefault(stat.step_key, []).append(stat.end_time - stat.start_time)
    return {case: {k: round(statistics.median(v), 3) for k, v in sorted(steps.items())} for case, steps in found.items()}


def floor_seconds(setup: dict, first_day: str, new_days: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per case, each round's plain-Dagster floor (:func:`benchmarks.run_floor.measure_floor`) of
    the runs the platform plans for that case's command."""
    from benchmarks.run_floor import floor_plans, measure_floor

    cases = [(case, select, days) for day in new_days
             for case, select, days in (("new day", setup["new_day"], (day, day)), ("full rebuild", setup["select"], (first_day, day)))]
    found: dict[str, list[dict[str, Any]]] = {"new day": [], "full rebuild": []}
    with tempfile.TemporaryDirectory(prefix="bench-partitions-floor-") as tmp:
        plans = floor_plans(str(Path(tmp) / "home"), [(select, days) for _, select, days in cases])
        for (case, _, _), plan in zip(cases, plans):
            plan_file = Path(tmp) / "plan.json"
            plan_file.write_text(json.dumps(plan))
            found[case].append(measure_floor(plan_file))
    return found


def run(config: RunConfig) -> BenchmarkResult:
    """Every scale of the setup (or of ``--sizes``, read as scales) gives a pair of cases per history length, and its targets."""
    setup = QUICK if config.quick else FULL
    scales = [float(s) for s in config.sizes] or [setup["scale"]]
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="full rebuild of every day with data")
    for scale in scales:
        with tempfile.TemporaryDirectory(prefix="bench-partitions-sources-") as simulated:
            config.log(f"  {NAME}: simulating the sources at scale {scale:g}")
            _mesh(["simulate", "--scale", f"{scale:g}"], simulated)
            histories = sorted(setup["histories"])
            for history in histories:
                _one_history(config, result, Path(simulated) / "sources", scale, history, setup, judged=history == histories[-1])
    result.add_ratios()
    return result


def _one_history(config: RunConfig, result: BenchmarkResult, sources: Path, scale: float, history: int, setup: dict, judged: bool) -> None:
    import pandas as pd

    first_new = pd.Timestamp(FIRST_NEW_DAY)
    new_days = [d.strftime("%Y-%m-%d") for d in pd.date_range(start=first_new, periods=setup["repeats"])]
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(end=first_new - pd.Timedelta(days=1), periods=history)] + new_days
    samples: dict[str, list[dict]] = {"new day": [], "full rebuild": []}
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as home:
        config.log(f"  {NAME}: setup at scale {scale:g} ({history} days of history)")
        shutil.copytree(sources, Path(home) / "sources")
        landing = Path(home) / "sources" / "claims_landing"
        per_day = daily_landing(landing, days)
        for d in days[:history]:
            land(landing, d)
        _mesh(["materialize", "--in-process", *(["--select", setup["setup"]] if setup["setup"] else []), "--from", days[0], "--to", days[history - 1]], home)
        for i, new_day in enumerate(new_days):
            config.log(f"  {NAME}: scale {scale:g}, {history} days, round {i + 1}/{setup['repeats']} ({new_day})")
            land(landing, new_day)
            samples["new day"].append(_mesh(["materialize", "--in-process", "--select", setup["new_day"], "--partition", new_day], home))
            samples["full rebuild"].append(_mesh(["materialize", "--in-process", "--select", setup["select"], "--from", days[0], "--to", new_day], home))
        steps = step_seconds(Path(home) / "dagster_home", days[0], new_days)
    config.log(f"  {NAME}: plain-Dagster floor of both cases ({history} days)")
    floors = floor_seconds(setup, days[0], new_days)
    claims = sum(per_day[d] for d in days[:history])
    size = f"{history} days + 1, {claims:,} claims"
    cases = {}
    for name, runs in samples.items():
        cases[name] = Case(
            name, size, round(statistics.median(r["wall_s"] for r in runs), 3),
            None if name == "full rebuild" else "full rebuild",
            cpu_seconds=round(statistics.median(r["cpu_s"] for r in runs), 3), peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
            details={"in_runs_s_median": statistics.median(r["in_runs_s"] for r in runs), "samples_s": [r["wall_s"] for r in runs],
                     "in_runs_s": [r["in_runs_s"] for r in runs], "steps_s_per_run": steps.get(name, {}),
                     "floor_in_runs_s_median": statistics.median(f["in_runs_s"] for f in floors[name]),
                     "floor_in_runs_s": [f["in_runs_s"] for f in floors[name]],
                     "claims_new_days": {d: per_day[d] for d in new_days}, "history_days": history, "scale": scale},
        )
        result.cases.append(cases[name])
    new, full = cases["new day"], cases["full rebuild"]
    at = f"{history} days, {claims:,} claims"
    in_runs = new.details["in_runs_s_median"] / full.details["in_runs_s_median"]
    wall = new.seconds / full.seconds
    partitioned = ("claims__", "fraud__claim_features", "fraud__fraud_scores")
    part = {name: sum(v for k, v in c.details["steps_s_per_run"].items() if k.startswith(partitioned)) for name, c in (("new", new), ("full", full))}
    floor_new, floor_full = new.details["floor_in_runs_s_median"], full.details["floor_in_runs_s_median"]
    own_new, own_full = new.details["in_runs_s_median"] - floor_new, full.details["in_runs_s_median"] - floor_full
    beyond = round(own_new / own_full, 3) if own_full > 0 else None  # a tiny quick run can cost less than its floor
    # plain Dagster's own ratio for the same plan: what the target would be for bodies that do nothing
    floor_ratio = round(floor_new / floor_full, 3) if floor_full > 0 else None
    result.notes.append(
        f"{at}: plain-Dagster floor inside the runs: new day {floor_new:.1f} s, full rebuild {floor_full:.1f} s "
        f"(plain Dagster's own ratio for the same runs, checks and partitions: {'n/a' if floor_ratio is None else f'{floor_ratio:.3f}x'}); "
        f"the new day's floor alone is {floor_new / full.details['in_runs_s_median']:.3f}x the full rebuild; beyond the floor (the platform's own work), new day "
        f"{own_new:.1f} s vs full rebuild {own_full:.1f} s ({'n/a' if beyond is None else f'{beyond:.3f}x'})"
    )
    new.details["beyond_floor_ratio"] = beyond
    new.details["floor_ratio"] = floor_ratio
    if judged:
        result.targets.append(Target(f"new day / full rebuild, time inside the Dagster runs ({at})", TARGET_RATIO, "x", round(in_runs, 3)))
        result.targets.append(Target(f"new day / full rebuild, wall time of the command ({at})", TARGET_RATIO, "x", round(wall, 3)))
        if part["full"]:
            result.targets.append(Target(f"new day / full rebuild, the partitioned steps (claims, fraud features and scores; {at})", TARGET_RATIO, "x",
                                         round(part["new"] / part["full"], 3)))
    if part["full"]:
        result.notes.append(f"{at}: partitioned steps: new day {part['new']:.1f} s vs full rebuild {part['full']:.1f} s ({part['new'] / part['full']:.3f}x); "
                            "each step's fixed work (reading its inputs' tables, its checks, report and events) is a floor that one day of data does not go below")
    result.notes.append(
        f"{at}: inside the runs: new day {new.details['in_runs_s_median']:.1f} s vs full rebuild {full.details['in_runs_s_median']:.1f} s "
        f"({in_runs:.3f}x); wall {new.seconds:.1f} s vs {full.seconds:.1f} s ({wall:.3f}x): loading the mesh in a fresh "
        "process and the dbt marts rebuilt whole (dbt's own start included) are about the same in both; the full rebuild also retrains the model"
        + ("" if judged else "; the targets are judged at the longest history")
    )


if __name__ == "__main__":  # pragma: no cover - python -m benchmarks run --only partitions is the entry point
    print(json.dumps(run(RunConfig(quick="--quick" in sys.argv)).__dict__, default=str, indent=1))
