"""Write-audit-publish: a product's data is checked against its contract before it is published.

:func:`audit` runs inside the product's own Dagster step, after the domain's transform:

1. structural enforcement (columns and types; :func:`mesh_platform.contracts.conform`) — reported
   as the blocking asset check ``contract_schema``;
2. every quality rule of the contract (:mod:`.rules`), evaluated in one DuckDB pass (:mod:`.evaluate`)
   and recorded as Great Expectations results with a Data Docs page (:mod:`.gx`) — each rule is an
   asset check with its severity and observed values (the required columns' not-null rules are one
   check, ``required_columns``: :mod:`.rules`);
3. if any blocking check failed, the step fails with :class:`~mesh_platform.quality.results.QualityGateFailed` and nothing is
   published; the last good version stays, and downstream steps do not run. Otherwise the audited
   table goes to the IO manager, which publishes it atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Iterable

import dagster as dg
import pyarrow as pa

from mesh_platform.contracts import ContractViolation, conform
from mesh_platform.contracts.model import Contract
from mesh_platform.foundations import metadata as md
from mesh_platform.foundations.problems import display_path
from mesh_platform.governance.policies import PolicyResult, check_product
from mesh_platform.quality import quarantine
from mesh_platform.quality.evaluate import evaluate
from mesh_platform.quality.results import QualityGateFailed, check_results, write_report
from mesh_platform.quality.rules import REQUIRED_CHECK, Rule, rules_for

SCHEMA_CHECK = "contract_schema"


POLICY_CHECK = "governance_policies"


@dataclass(frozen=True)
class AuditedTable:
    """A table that passed its contract's schema and blocking quality checks: ready to publish.

    It carries the contract it was audited against, so the IO manager publishes it without parsing
    or looking anything up again.
    """

    table: pa.Table
    contract: Contract
    deferred: Any = None
    """The primary key's rules still running (:class:`~mesh_platform.quality.deferred.DeferredRules`),
    when the audit deferred them: the IO manager's commit waits for them."""

    @property
    def contract_id(self) -> str:
        return self.contract.id

    @property
    def version(self) -> str:
        return self.contract.version


class PolicyViolation(Exception):
    def __init__(self, product: str, problems):
        self.problems = problems
        super().__init__(f"{product} breaks governance policies; nothing was published:\n" + "\n".join(f"  - {p}" for p in problems))


def check_specs(key: dg.AssetKey, contract: Contract) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(POLICY_CHECK, asset=key, blocking=True, description="The mesh's governance policies hold (evaluated when definitions load, reported by every publish)."),
        dg.AssetCheckSpec(SCHEMA_CHECK, asset=key, blocking=True, description="Columns and types match the contract."),
        quarantine.check_spec(key, contract),
    ]
    grouped: dict[str, list[Rule]] = {}
    for rule in rules_for(contract):
        grouped.setdefault(rule.check_name, []).append(rule)
    for name, rules in grouped.items():
        rule, blocking = rules[0], any(r.blocking for r in rules)
        if name == REQUIRED_CHECK:
            columns = ", ".join(r.column for r in rules)
            description = f"Required columns have no nulls: {columns} (error; schema.properties[].required and primaryKey)"
        else:
            description = f"{rule.description} ({'error' if rule.blocking else 'warning'}; {rule.source})"
        specs.append(dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=description,
                                       metadata={md.RULE_KIND: rule.kind, md.CONTRACT_FIELD: ", ".join(r.source for r in rules)}))
    return specs


def _kept_rows(context, contract: Contract, rules: list[Rule], lake) -> int:
    """Rows a partition publish leaves on the port's other days (0 unless a table-level count needs them)."""
    from mesh_platform.products import partitions

    if lake is None or context is None or not any(r.kind == "row_count" for r in rules) or partitions.of(contract) is None:
        return 0
    keys = partitions.run_keys(context)
    if not keys:
        return 0
    from mesh_platform.storage.publishing import rows_outside

    return rows_outside(lake, contract, keys)


def audit(
    context,
    contract: Contract,
    data,
    emit_checks: bool = True,
    policies: Iterable[PolicyResult] | None = None,
    lake=None,
    reports: bool = True,
    *,
    defer_key: bool = False,
) -> Generator[dg.AssetCheckResult, None, tuple[AuditedTable, dict]]:
    """Yield one check result per rule; return the audited table and output metadata.

    ``policies`` are the product's policy results from its plan (evaluated once, at load); the
    ``governance_policies`` check reports them. Without a plan (a harness auditing a bare contract)
    the policies are evaluated here. ``lake`` receives the quality report (the Data Docs page) when
    ``reports`` is on (without a lake no report is written). Raises :class:`ContractViolation` or :class:`QualityGateFailed` when a
    blocking check fails. With ``emit_checks=False`` (assets whose checks are declared elsewhere,
    such as dbt tests) the results go into the output metadata (``mesh/quality``) instead of asset
    check results.

    With ``defer_key=True`` (a product's step; only with ``emit_checks``, and for a table of at least
    :data:`mesh_platform.storage.gate.OVERLAP_MIN_ROWS` rows) the rules over exactly the primary key run in a thread while the IO manager writes the data files, and the commit waits
    for them (:mod:`mesh_platform.quality.deferred`): the audited table carries them, the quality
    report is written once they finished, and their check results come after the step's output.
    When another blocking rule already failed they are waited for here, and reported as before.
    """
    collected: dict[str, bool] = {}

    def emit(result: dg.AssetCheckResult):
        collected[result.check_name] = result.passed
        return [result] if emit_checks else []

    product = f"{contract.domain}/{contract.name}"
    results = list(policies) if policies is not None else check_product(contract.domain, contract, display_path(contract.source) if contract.source else product)
    failed = [p for r in results if not r.passed for p in r.problems]
    yield from emit(dg.AssetCheckResult(
        check_name=POLICY_CHECK,
        passed=not failed,
        metadata={"policies": dg.MetadataValue.json({r.policy: r.passed for r in results})},
        description="\n".join(str(p) for p in failed) or None,
    ))
    if failed:
        raise PolicyViolation(product, failed)
    try:
        table = conform(data, contract, check_values=False)
    except ContractViolation as exc:
        yield from emit(dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            passed=False,
            metadata={"violations": dg.MetadataValue.json([str(v) for v in exc.violations])},
            description=str(exc),
        ))
        raise
    yield from emit(dg.AssetCheckResult(check_name=SCHEMA_CHECK, passed=True, metadata={"columns": len(table.schema), "rows": table.num_rows}))
    rules = rules_for(contract)
    deferred = None
    if defer_key and emit_checks:
        from mesh_platform.quality.deferred import DeferredRules, is_key_rule
        from mesh_platform.storage.gate import worth_overlapping

        later = [r for r in rules if is_key_rule(r, contract)]
        if later and worth_overlapping(table.num_rows):
            names = {r.name for r in later}
            rules = [r for r in rules if r.name not in names]
            deferred = DeferredRules(context, contract, table, later, [r.name for r in rules_for(contract)], lake, reports)
    report = evaluate(table, rules, product, kept_rows=_kept_rows(context, contract, rules, lake))
    for check in check_results(report.results):
        yield from emit(check)
    if deferred is not None:
        deferred.done = report
        if report.blocking_failures:  # failing anyway: every rule reported at once, as without the overlap
            report = deferred.merged(deferred.gate.check_result())
            later = {r.name for r in deferred.rules}
            for check in check_results([r for r in report.results if r.rule.name in later]):
                yield from emit(check)
            deferred = None
        else:
            metadata = {
                md.QUALITY_SECONDS: round(report.seconds, 4),
                md.QUALITY_CHECKS: len(report.results) + len(deferred.rules) + 1,
                md.QUALITY_WARNINGS: len(report.warnings),
            }
            return AuditedTable(table, contract, deferred), metadata
    if reports and lake is not None:
        report_meta = write_report(context, contract, report, lake)
    else:
        report_meta = {}
    if report.blocking_failures:
        raise QualityGateFailed(product, report.blocking_failures)
    return AuditedTable(table, contract), {
        md.QUALITY_SECONDS: round(report.seconds, 4),
        md.QUALITY_CHECKS: len(report.results) + 1,
        md.QUALITY_WARNINGS: len(report.warnings),
        **({} if emit_checks else {md.QUALITY: dg.MetadataValue.json(collected)}),
        **report_meta,
    }


__all__ = ["AuditedTable", "QualityGateFailed", "Rule", "audit", "check_specs", "evaluate", "rules_for"]
