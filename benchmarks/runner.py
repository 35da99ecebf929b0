"""Run the selected benchmarks and write the results.

A full run is strictly sequential: one measured process at a time. A ``--quick`` run is a smoke
test whose figures mean nothing, so it runs :data:`QUICK_JOBS` benchmarks at a time (the slowest
first) to stay under a minute.
"""

from __future__ import annotations

import importlib
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from benchmarks import BENCHMARKS
from benchmarks.harness import RunConfig, git_commit, load_average, machine_info
from benchmarks.results import BenchmarkResult, render_text, write


QUICK_JOBS = 2


def run_one(name: str, config: RunConfig) -> BenchmarkResult:
    """Run one benchmark; a crash becomes an ``error`` result instead of ending the whole run."""
    module = importlib.import_module(f"benchmarks.{name}")
    skip = getattr(module, "skip_reason", None)
    reason = skip() if skip else None
    if reason:
        config.log(f"{name}: skipped ({reason})")
        return BenchmarkResult.skipped(name, module.DESCRIPTION, reason)
    config.log(f"{name}: running")
    started = time.perf_counter()
    try:
        result = module.run(config)
    except Exception as exc:  # report it, keep going with the other benchmarks
        config.log(traceback.format_exc())
        result = BenchmarkResult(name, module.DESCRIPTION, status="error", reason=f"{type(exc).__name__}: {str(exc).strip()[-2000:]}")
    result.seconds = round(time.perf_counter() - started, 1)
    config.log(f"{name}: {result.status} in {result.seconds:.0f}s")
    return result


def run_all(config: RunConfig, only: list[str] | None = None) -> tuple[list[BenchmarkResult], dict[str, Any]]:
    """Run ``only`` (default: every benchmark), print the table, write ``latest.json``/``latest.md``."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    load_before = load_average()
    names = [name for name in BENCHMARKS if not only or name in only]
    if config.quick:
        slowest_first = sorted(names, key=lambda n: -getattr(importlib.import_module(f"benchmarks.{n}"), "QUICK_SECONDS", 10))
        with ThreadPoolExecutor(max_workers=QUICK_JOBS) as pool:
            done = dict(zip(slowest_first, pool.map(lambda n: run_one(n, config), slowest_first)))
        results = [done[name] for name in names]
    else:
        results = [run_one(name, config) for name in names]
    run = {
        "started_at": started_at,
        "seconds": round(time.perf_counter() - started, 1),
        "quick": config.quick,
        "only": list(only or []),
        "git": git_commit(),
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average()},
    }
    print(render_text(results))
    json_path, md_path = write(results, run, config.out_dir)
    print(f"\nwrote {json_path} and {md_path} ({run['seconds']:.0f}s)")
    return results, run
