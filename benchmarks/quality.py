"""quality: the cost of the write-audit-publish gate, i.e. evaluating a contract's quality rules.

Listed as **skipped** (with the reason) when ``mesh_platform.quality`` does not exist, e.g. on a
checkout from before the quality gate. Otherwise every case runs on the synthetic orders table of
:mod:`benchmarks.synthetic_table`, whose contract yields 16 rules (``rules_for``): not-null for
every required column, a unique key, ranges, a pattern, ``invalidValues``, ``nullValues`` and
``rowCount``. Each case is a *factory* ``(df, contract) -> callable``: the factory prepares
(untimed), the callable is what is timed. Cases, each in its own fresh process:

``pandas``           (baseline) the same rules evaluated with plain vectorized pandas on the
                     producer's DataFrame, :func:`reference_checks`: what a team hand-writes.
``platform evaluate``  ``mesh_platform.quality.evaluate``: every rule in one DuckDB pass over the
                     conformed Arrow table (conforming is done untimed).
``platform audit``   ``mesh_platform.quality.checks.audit`` as a product step runs it: structural conform
                     + evaluate + one Dagster check result per rule, reports off
                     (no report written).
``platform audit + GX report``  the same with the Great Expectations result and Data Docs page
                     written to the lake (the default in production).
``great_expectations``  plain GX 1.x, pandas engine, validating the platform's own suite
                     (``mesh_platform.quality.gx.build_suite``): what the platform avoids.

To add a case, write a factory here and list it in :data:`CASES`.
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Callable

from benchmarks.harness import RunConfig, run_cases, self_peak_rss_mb, summarize, time_repeated
from benchmarks.results import BenchmarkResult, Case
from benchmarks.synthetic_table import rows_label

NAME = "quality"
DESCRIPTION = "evaluate a contract's quality rules (write-audit-publish gate) vs hand-written pandas checks"
MODULE = "mesh_platform.quality"
BASELINE = "pandas"

# label -> factory (a "module:function" taking (df, contract), returning the callable to time)
CASES: dict[str, str] = {
    BASELINE: f"{__name__}:pandas_factory",
    "platform evaluate": f"{__name__}:evaluate_factory",
    "platform audit": f"{__name__}:audit_factory",
    "platform audit + GX report": f"{__name__}:audit_with_report_factory",
    "great_expectations": f"{__name__}:great_expectations_factory",
}
# rows -> (warm-up calls, timed calls, cases left out at that size and why)
FULL_SIZES: dict[int, tuple[int, int, dict[str, str]]] = {
    1_000_000: (1, 5, {}),
    5_000_000: (1, 3, {"great_expectations": "left out at 5M rows to keep the full run within budget (the slowest case at 1M)"}),
}
QUICK_SIZES: dict[int, tuple[int, int, dict[str, str]]] = {20_000: (1, 2, {})}
Timed = Callable[[], Any]


def quality_module_present() -> bool:
    """Whether ``mesh_platform.quality`` exists, without importing ``mesh_platform`` (and Dagster)."""
    spec = importlib.util.find_spec("mesh_platform")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / "quality.py").exists() or (Path(p) / "quality" / "__init__.py").exists() for p in spec.submodule_search_locations)


def skip_reason() -> str | None:
    return None if quality_module_present() else f"{MODULE} not present"


# -- the baseline: the same rules in plain pandas -----------------------------------------------


def _unexpected(df, rule) -> int:
    """Rows of ``df`` that break a column rule (same definitions as the platform's SQL)."""
    kind, p = rule.kind, rule.params
    if kind in ("unique", "duplicate_values"):
        columns = p.get("columns") or [rule.column]
        return int(df[columns].dropna().duplicated().sum())
    s = df[rule.column]
    if kind in ("not_null", "null_values"):
        return int(s.isna().sum())
    if kind == "between":
        import pandas as pd

        bad = pd.Series(False, index=s.index)
        for key, op in (("minimum", s.lt), ("exclusiveMinimum", s.le), ("maximum", s.gt), ("exclusiveMaximum", s.ge)):
            if key in p:
                bad |= op(p[key])
        return int(bad.sum())
    if kind == "regex" or (kind == "invalid_values" and "pattern" in p):
        return int((s.notna() & ~s.str.contains(p["pattern"], regex=True, na=True)).sum())
    if kind == "length":
        lengths = s.str.len()
        return int(((lengths < p.get("minLength", 0)) | (lengths > p.get("maxLength", float("inf")))).sum())
    if kind == "invalid_values":
        return int((s.notna() & ~s.isin(p.get("validValues", []))).sum())
    if kind == "missing_values":
        missing = [v for v in p.get("missing", []) if v is not None]
        return int((s.isna() | s.isin(missing)).sum())
    raise ValueError(f"no pandas reference for rule kind {kind!r}")


def reference_checks(df, rules) -> dict[str, bool]:
    """Evaluate ``rules`` (``mesh_platform.quality.rules.Rule``) on ``df``: rule name -> passed."""
    outcomes = {}
    for rule in rules:
        if rule.kind == "sql":
            continue
        value = len(df) if rule.kind == "row_count" else _unexpected(df, rule)
        if rule.unit == "percent" and rule.kind != "row_count":
            value = 100.0 * value / len(df) if len(df) else 0.0
        outcomes[rule.name] = rule.accepts(value)
    return outcomes


# -- factories (run in the child process) -------------------------------------------------------


def pandas_factory(df, contract) -> Timed:
    from mesh_platform.quality.rules import rules_for

    rules = rules_for(contract)
    return lambda: reference_checks(df, rules)


def evaluate_factory(df, contract) -> Timed:
    from mesh_platform.contracts import conform
    from mesh_platform.quality.evaluate import evaluate
    from mesh_platform.quality.rules import rules_for

    table, rules = conform(df, contract, check_values=False), rules_for(contract)
    return lambda: evaluate(table, rules)


def run_audit(contract, df, lake=None, defer_key: bool = False):
    """Drive ``audit`` (a generator of check results) to its return value, as Dagster would.

    ``defer_key``: as a product's step audits (the primary key's rules left running for the publish)."""
    from mesh_platform.quality.checks import audit

    steps = audit(None, contract, df, lake=lake, reports=lake is not None, defer_key=defer_key)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def audit_factory(df, contract) -> Timed:
    return lambda: run_audit(contract, df)  # no quality report


def audit_with_report_factory(df, contract) -> Timed:
    from mesh_platform.storage.lake import Lake

    lake = Lake(tempfile.mkdtemp(prefix="bench-quality-lake-"))  # the GX reports go there
    return lambda: run_audit(contract, df, lake)


def great_expectations_factory(df, contract) -> Timed:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from mesh_platform.quality.gx import build_suite
    from mesh_platform.quality.rules import rules_for

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batches = context.data_sources.add_pandas("bench").add_dataframe_asset("orders").add_batch_definition_whole_dataframe("all")
    suite = build_suite(contract.id, rules_for(contract))
    return lambda: batches.get_batch(batch_parameters={"dataframe": df}).validate(suite)


def measure_case(factory: str, rows: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Child-process entry: build the case with ``factory`` and time its callable."""
    from benchmarks.synthetic_table import make_frame, write_contract
    from mesh_platform.contracts import load_contract

    module_name, _, function_name = factory.partition(":")
    make = getattr(importlib.import_module(module_name), function_name)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        contract = load_contract(write_contract(Path(tmp)))
        df = make_frame(rows)
        timed = make(df, contract)
        setup_rss = self_peak_rss_mb()
        samples = time_repeated(timed, repeats=repeats, warmup=warmup)
    return {**summarize(samples.wall, samples.cpu), "setup_peak_rss_mb": setup_rss}


# -- the benchmark (runs in the parent) ----------------------------------------------------------


def run(config: RunConfig) -> BenchmarkResult:
    """Every case of :data:`CASES` at every size."""
    cases = CASES
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="the same rules in vectorized pandas (benchmarks.quality.reference_checks)")
    for rows, (warmup, repeats, left_out) in (QUICK_SIZES if config.quick else FULL_SIZES).items():
        size = rows_label(rows)
        labels = [label for label in cases if label not in left_out]
        result.notes += [f"{label} @ {size}: {left_out[label]}" for label in cases if label in left_out]
        config.log(f"  {NAME}: {', '.join(labels)} @ {size}")
        calls = [{"factory": cases[label], "rows": rows, "warmup": warmup, "repeats": repeats} for label in labels]
        for label, payload in zip(labels, run_cases(f"{__name__}:measure_case", calls, isolate=not config.quick)):
            details = {k: v for k, v in payload.items() if k not in ("median_s", "peak_rss_mb")}
            details.update(rows=rows, warmup=warmup, repeats=repeats)
            base = None if label == BASELINE else BASELINE
            result.cases.append(
                Case(label, size, payload["median_s"], base, cpu_seconds=payload["cpu_median_s"], peak_rss_mb=payload["peak_rss_mb"], details=details)
            )
    result.add_ratios()
    return result
