"""What a quality check tells Dagster and the lake: a rule's result as an asset check, the failed gate, the stored report.

Shared by the audit (:mod:`.checks`) and the primary key's rules that finish during the publish
(:mod:`.deferred`).
"""

from __future__ import annotations

import os

import dagster as dg

from mesh_platform.contracts.model import Contract
from mesh_platform.foundations import metadata as md
from mesh_platform.quality.evaluate import QualityReport, RuleResult


class QualityGateFailed(Exception):
    def __init__(self, product: str, failures: list[RuleResult]):
        self.product = product
        self.failures = failures
        lines = [f"{product} failed {len(failures)} blocking quality check(s); nothing was published:"]
        for f in failures:
            where = f"column {f.rule.column!r}" if f.rule.column else "table"
            line = f"  - {where}: {f.rule.name} ({f.rule.source}): {describe(f)}"
            if f.examples:
                line += " (e.g. " + ", ".join(repr(v) for v in f.examples) + ")"
            lines.append(line)
        super().__init__("\n".join(lines))


def describe(result: RuleResult) -> str:
    rule = result.rule
    if rule.kind in ("row_count", "sql"):
        return f"observed {result.value:g}, expected {rule.expected}"
    return f"{result.unexpected_count} unexpected of {result.element_count} rows, expected {rule.expected}"


def check_result(result: RuleResult) -> dg.AssetCheckResult:
    rule = result.rule
    metadata: dict = {
        "observed_value": result.value,
        "expected": rule.expected,
        "contract_field": rule.source,
        "rows": result.element_count,
    }
    if result.unexpected_count is not None:
        metadata["unexpected_count"] = result.unexpected_count
        metadata["unexpected_percent"] = round(result.unexpected_percent or 0.0, 4)
    if result.examples:
        metadata["unexpected_examples"] = dg.MetadataValue.json([str(v) for v in result.examples])
    return dg.AssetCheckResult(
        check_name=rule.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR if rule.blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=None if result.passed else describe(result),
    )


def check_results(results: list[RuleResult]) -> list[dg.AssetCheckResult]:
    """The asset check results of ``results``: one per rule, except the rules that share a check
    (:attr:`Rule.check`, the required columns), which become one result: passed when all passed,
    an error when any of them blocks, each column's nulls in its metadata."""
    grouped: dict[str, list[RuleResult]] = {}
    for result in results:
        grouped.setdefault(result.rule.check_name, []).append(result)
    out = []
    for name, group in grouped.items():
        if len(group) == 1 and group[0].rule.check_name == group[0].rule.name:
            out.append(check_result(group[0]))
            continue
        failed = [r for r in group if not r.passed]
        metadata: dict = {
            "columns": dg.MetadataValue.json({r.rule.column or r.rule.name: r.unexpected_count if r.unexpected_count is not None else r.value for r in group}),
            "observed_value": sum((r.unexpected_count if r.unexpected_count is not None else r.value) or 0 for r in group),
            "expected": "0 nulls in every column",
            "contract_field": ", ".join(r.rule.source for r in group),
            "rows": group[0].element_count,
        }
        examples = {r.rule.column: [str(v) for v in r.examples] for r in failed if r.examples}
        if examples:
            metadata["unexpected_examples"] = dg.MetadataValue.json(examples)
        out.append(dg.AssetCheckResult(
            check_name=name,
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR if any(r.rule.blocking for r in group) else dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description="; ".join(f"{r.rule.column or r.rule.name}: {describe(r)}" for r in failed) or None,
        ))
    return out


def write_report(context, contract: Contract, report: QualityReport, lake) -> dict:
    """The quality report, stored in the lake next to the product's ports.

    The run writes the report itself (every rule's result, ``<run>.report.json``: no Great
    Expectations import, milliseconds). Turning it into GX's validation result and Data Docs page
    (``<run>.json``, ``<run>.html``) costs seconds, most of them importing GX, so for a local lake it
    happens off the run's critical path: ``mesh reports serve`` renders a page the first time it is
    asked for, ``mesh reports render`` renders what is pending. An S3 lake without
    ``MESH_REPORTS_URL`` links the ``s3://`` object itself, which nothing would render later: there
    the run renders it, as before (:mod:`mesh_platform.quality.reports`)."""
    from mesh_platform.quality.reports import render_pending, report_url, save_report

    base = f"{contract.domain}/{contract.name}/_quality"
    run = context.run.run_id if context is not None else "local"
    page = f"{base}/{run}.html"
    save_report(lake, f"{base}/{run}.report.json", report, contract.id)
    if lake.root.startswith("s3://") and not os.environ.get("MESH_REPORTS_URL"):
        render_pending(lake, f"{base}/{run}.report.json")
    expressed = [r for r in report.results if r.rule.kind != "sql"]  # what GX can state (its success percent)
    return {
        md.QUALITY_REPORT: dg.MetadataValue.url(report_url(lake, page)),  # HTTP or s3://, never file://
        md.GX_SUCCESS_PERCENT: 100.0 * sum(r.passed for r in expressed) / len(expressed) if expressed else 100.0,
    }
