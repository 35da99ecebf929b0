"""Great Expectations 1.x: the contract's rules as an ExpectationSuite, results as GX results, Data Docs HTML.

The metrics are computed once, by :mod:`mesh_platform.quality.evaluate` (one DuckDB pass), and
recorded here as GX ``ExpectationValidationResult`` objects, with the same ``result`` fields GX
fills (element_count, unexpected_count, unexpected_percent, partial_unexpected_list,
observed_value) and the expectation configuration GX would have run. GX's own renderer turns the
suite result into a Data Docs validation page. ``success`` is decided by the contract's operator
(``mustBe``, ``mustBeLessThan``...), which for thresholds other than zero GX can only approximate
with ``mostly``.

Importing GX costs seconds, so this module is imported only when a product is checked, never when
definitions load.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import TYPE_CHECKING

from mesh_platform.quality.evaluate import QualityReport, RuleResult
from mesh_platform.quality.rules import Rule

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite, ExpectationSuiteValidationResult


def _row_count_bounds(rule: Rule) -> tuple[int | None, int | None]:
    t = rule.threshold
    return {
        "mustBe": (t, t),
        "mustBeGreaterThan": (int(t) + 1, None),
        "mustBeGreaterOrEqualTo": (t, None),
        "mustBeLessThan": (None, int(t) - 1),
        "mustBeLessOrEqualTo": (None, t),
        "mustBeBetween": (t[0], t[1]) if isinstance(t, list) else (None, None),
    }.get(rule.operator, (None, None))


def expectation_for(rule: Rule):
    """The GX expectation that states ``rule`` (None for SQL rules, which GX cannot express as-is)."""
    expectation = _expectation(rule)
    if expectation is not None:
        expectation.severity = "critical" if rule.blocking else "warning"
        expectation.meta = {"mesh_rule": rule.name, "contract_field": rule.source, "blocking": rule.blocking}
    return expectation


def _expectation(rule: Rule):
    import great_expectations.expectations as gxe

    c, p = rule.column, rule.params
    match rule.kind:
        case "not_null" | "null_values":
            mostly = 1.0
            if rule.kind == "null_values" and rule.unit == "percent" and isinstance(rule.threshold, (int, float)):
                mostly = max(0.0, 1.0 - float(rule.threshold) / 100.0)
            return gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly)
        case "unique" | "duplicate_values":
            columns = p.get("columns") or [c]
            if len(columns) == 1:
                return gxe.ExpectColumnValuesToBeUnique(column=columns[0])
            return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))
        case "between":
            lo = p.get("minimum", p.get("exclusiveMinimum"))
            hi = p.get("maximum", p.get("exclusiveMaximum"))
            return gxe.ExpectColumnValuesToBeBetween(
                column=c, min_value=lo, max_value=hi, strict_min="exclusiveMinimum" in p, strict_max="exclusiveMaximum" in p
            )
        case "regex":
            return gxe.ExpectColumnValuesToMatchRegex(column=c, regex=p["pattern"])
        case "length":
            return gxe.ExpectColumnValueLengthsToBeBetween(column=c, min_value=p.get("minLength"), max_value=p.get("maxLength"))
        case "invalid_values":
            if "pattern" in p:
                return gxe.ExpectColumnValuesToMatchRegex(column=c, regex=p["pattern"])
            return gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(p.get("validValues", [])))
        case "missing_values":
            values = [v for v in p.get("missing", []) if v is not None]
            if values:
                return gxe.ExpectColumnValuesToNotBeInSet(column=c, value_set=values)
            return gxe.ExpectColumnValuesToNotBeNull(column=c)
        case "row_count":
            lo, hi = _row_count_bounds(rule)
            return gxe.ExpectTableRowCountToBeBetween(min_value=lo, max_value=hi)
    return None


def build_suite(name: str, rules: list[Rule]) -> "ExpectationSuite":
    import great_expectations as gx

    expectations = []
    for rule in rules:
        expectation = expectation_for(rule)
        if expectation is not None:
            expectations.append(expectation)
    # Built without a data context: the suite is the contract's, not stored in a GX project.
    return gx.ExpectationSuite(name=name, expectations=expectations)


def _result_dict(result: RuleResult) -> dict:
    if result.rule.kind in ("row_count", "sql"):
        return {"observed_value": result.value}
    count, total = result.unexpected_count or 0, result.element_count
    percent = 100.0 * count / total if total else 0.0
    return {
        "element_count": total,
        "unexpected_count": count,
        "unexpected_percent": percent,
        "unexpected_percent_total": percent,
        "unexpected_percent_nonmissing": percent,
        "partial_unexpected_list": list(result.examples),
        "missing_count": 0,
        "missing_percent": 0.0,
    }


def validation_result(report: QualityReport, suite_name: str) -> "ExpectationSuiteValidationResult":
    """The quality report as a GX suite validation result (what a GX checkpoint would store)."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    results = []
    for res in report.results:
        expectation = expectation_for(res.rule)
        if expectation is None:
            continue
        config = expectation.configuration
        results.append(
            ExpectationValidationResult(
                success=res.passed,
                expectation_config=config,
                result=_result_dict(res),
                exception_info={"raised_exception": False, "exception_traceback": None, "exception_message": None},
            )
        )
    passed = sum(r.success for r in results)
    now = dt.datetime.now(dt.timezone.utc)
    return ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=suite_name,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": 100.0 * passed / len(results) if results else None,
        },
        meta={
            "great_expectations_version": gx.__version__,
            "active_batch_definition": {"datasource_name": "mesh", "data_connector_name": "fluent", "data_asset_name": report.product, "batch_identifiers": {}},
            "batch_spec": {"data_asset_name": report.product, "engine": "duckdb over the conformed Arrow table"},
            "run_id": {"run_name": f"{report.product}-publish", "run_time": now.isoformat()},
            "validation_time": now.isoformat(),
            "validation_id": str(uuid.uuid4()),
            "checkpoint_id": None,
            "batch_parameters": {},
        },
        batch_id=f"mesh-{report.product}",
    )


@functools.cache
def _page_view():
    """One GX page view per process: its Jinja environment compiles GX's templates once and keeps
    them (a new view per page recompiled them, ~0.08 s a page)."""
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView()


def render_html(result: "ExpectationSuiteValidationResult") -> str:
    """GX Data Docs' validation page for one result, as a standalone HTML document."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    return _page_view().render(ValidationResultsPageRenderer().render(result))
