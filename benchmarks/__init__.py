"""Performance harness of the mesh platform: ``python -m benchmarks run [--quick] [--only NAME ...]``.

Every benchmark is one module of this package exposing ``NAME``, ``DESCRIPTION`` and
``run(config) -> BenchmarkResult``; a module may also expose ``skip_reason() -> str | None`` for
benchmarks whose subject does not exist yet (then the run lists it as skipped, with the reason).
Results go to ``benchmarks/results/latest.json`` and ``latest.md``; see ``benchmarks/README.md``.

This package imports nothing heavy at import time: child processes import it before measuring
import costs (see :mod:`benchmarks.definitions_load`).
"""

BENCHMARKS = ("io_roundtrip", "quality", "definitions_load", "whole_mesh", "dbt", "production", "partitions", "run_floor", "serving", "freshness")
"""Every benchmark, in the order a run executes them."""
