"""Measurement machinery shared by every benchmark.

Two rules keep the figures honest:

* **Every case runs in a fresh Python process** (:func:`run_isolated`, :func:`run_command`), so one
  case's imports, caches and heap cannot help or hurt the next one, and its peak memory is its own.
  (``--quick`` runs, a smoke test, put the cases of one size in one process: :func:`run_cases`.)
  Peak memory is the child's ``ru_maxrss`` as returned by ``os.wait4`` for that one child: unlike
  ``getrusage(RUSAGE_CHILDREN)``, which is a high-water mark over *all* children reaped so far, it
  cannot report an earlier, bigger case's peak.
* **Times are medians** of ``repeats`` timed calls after ``warmup`` untimed ones
  (:func:`time_repeated`), measured with ``time.perf_counter``.

Children import from cached bytecode, as production processes do, even when the caller sets
``PYTHONDONTWRITEBYTECODE``: the cache lives under :data:`PYCACHE` (``PYTHONPYCACHEPREFIX``), in
the temp folder, never in the project tree. A case's warm-up fills it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
"""The project folder (holds ``workspace.yaml``, ``domains/``, ``mesh_platform/``)."""

PACKAGES = ("dagster", "dagster-data-mesh", "pandas", "pyarrow", "numpy", "pydantic", "PyYAML", "dbt-core")
DEFAULT_TIMEOUT = 1800.0
PYCACHE = Path(tempfile.gettempdir()) / "mesh-benchmarks-pycache"


@dataclass(frozen=True)
class RunConfig:
    """What the command line asked for."""

    quick: bool = False
    out_dir: Path = ROOT / "benchmarks" / "results"
    verbose: bool = True
    sizes: tuple[int, ...] = ()
    """Sizes to run instead of the benchmark's full sizes (where a benchmark supports it), e.g. (2000,)."""

    def log(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)


# -- timing inside a process --------------------------------------------------------------------


@dataclass
class Samples:
    """Wall-clock and CPU seconds (all threads of the process) of each timed call."""

    wall: list[float]
    cpu: list[float]


def time_repeated(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Samples:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = Samples([], [])
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        samples.wall.append(time.perf_counter() - wall)
        samples.cpu.append(time.process_time() - cpu)
    return samples


def summarize(wall: list[float], cpu: list[float] | None = None) -> dict[str, Any]:
    """Median, min, max and the raw samples (seconds, rounded), plus the median CPU seconds.

    CPU time counts every thread of the process, so it can exceed wall time (Arrow, DuckDB), and it
    does not grow when other work competes for the CPUs: compare it across cases when the
    machine's load average is high.
    """
    summary = {
        "median_s": round(statistics.median(wall), 4),
        "min_s": round(min(wall), 4),
        "max_s": round(max(wall), 4),
        "samples_s": [round(s, 4) for s in wall],
    }
    if cpu:
        summary["cpu_median_s"] = round(statistics.median(cpu), 4)
    return summary


def self_peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- fresh processes ----------------------------------------------------------------------------


class CaseFailed(RuntimeError):
    """A child process exited with an error; carries the tail of its output."""


def _child_env(extra: dict[str, str | None] | None, pythonpath: list[str] | None) -> dict[str, str]:
    """This process's environment plus ``extra`` (``None`` removes a variable), ROOT on PYTHONPATH."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    paths = [*(pythonpath or []), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, float, float]:
    """Reap ``proc`` with ``wait4``; returns (exit status, peak RSS in MiB, CPU seconds), the last
    two for it and the children it reaped."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, round(usage.ru_maxrss / 1024, 1), round(usage.ru_utime + usage.ru_stime, 3)
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise CaseFailed(f"timed out after {timeout:.0f}s: {' '.join(map(str, proc.args))}")
        time.sleep(0.02)


def run_command(
    argv: list[str],
    *,
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pythonpath: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``argv`` in a fresh process: wall and CPU seconds, peak RSS (MiB) and its output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=_child_env(env, pythonpath), stdout=out, stderr=err, text=True)
        code, peak, cpu = _wait(proc, timeout)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-25:])
        raise CaseFailed(f"`{' '.join(map(str, argv))}` exited with {code}:\n{tail}")
    return {"wall_s": round(wall, 4), "cpu_s": cpu, "peak_rss_mb": peak, "stdout": stdout, "stderr": stderr}


def run_isolated_calls(
    calls: list[tuple[str, dict[str, Any]]],
    *,
    env: dict[str, str | None] | None = None,
    pythonpath: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """Make every ``(module:function, kwargs)`` call, in order, in one fresh interpreter.

    Each (JSON) result gains ``process_wall_s`` and ``process_cpu_s`` (interpreter start to exit)
    and ``peak_rss_mb`` (the child's peak resident memory), shared by all the calls of the process.
    """
    with tempfile.TemporaryDirectory(prefix="bench-case-") as tmp:
        spec = Path(tmp) / "spec.json"
        result = Path(tmp) / "result.json"
        spec.write_text(json.dumps({"calls": [{"target": t, "kwargs": k} for t, k in calls], "result": str(result)}))
        # cwd: a neutral folder, since `python -m` puts the cwd first on sys.path (it could shadow `domains`)
        ran = run_command([sys.executable, "-m", "benchmarks.isolated", str(spec)], env=env, cwd=Path(tmp), pythonpath=pythonpath, timeout=timeout)
        payloads = json.loads(result.read_text())
    for payload in payloads:
        payload["process_wall_s"] = ran["wall_s"]
        payload["process_cpu_s"] = ran["cpu_s"]
        payload["peak_rss_mb"] = ran["peak_rss_mb"]
    return payloads


def run_isolated(target: str, kwargs: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Call ``module:function(**kwargs)`` in a fresh interpreter and return its (JSON) result."""
    return run_isolated_calls([(target, kwargs or {})], **options)[0]


def run_cases(target: str, cases: list[dict[str, Any]], *, isolate: bool = True, **options: Any) -> list[dict[str, Any]]:
    """``target(**case)`` for every case: each in its own fresh process (``isolate``, the default),
    or all in one process (quick runs, where process start-up would dominate; peak memory is then
    the shared process's)."""
    if isolate:
        return [run_isolated(target, case, **options) for case in cases]
    return run_isolated_calls([(target, case) for case in cases], **options)


# -- provenance ---------------------------------------------------------------------------------


def git_commit() -> dict[str, Any]:
    """The commit benchmarked and whether the work tree had local changes (read-only git)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("--no-optional-locks", "status", "--porcelain")  # never touches the index
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine makes every figure noisier."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions,
    }
