"""The primary key's rules of an audit, evaluated while the product is published; the commit waits.

A product's step audits every rule before it hands the table to the IO manager, except the rules
over exactly the primary key's columns (``<key>_unique``, ``primary_key_unique``): the costliest
aggregation of the audit. :func:`mesh_platform.quality.checks.audit` with ``defer_key=True`` starts them
in a thread (:class:`mesh_platform.storage.gate.CommitGate`) and returns them with the audited table;
the IO manager publishes with that gate, so the Delta data files are written while they run and
only the commit waits. Then, before the commit:

- the quality report (GX result, Data Docs page) is written with every rule's result, as without
  the overlap;
- a failed blocking rule raises :class:`~mesh_platform.quality.results.QualityGateFailed`: the write ends
  without a commit, the port keeps its last good version, and the IO manager records the rules'
  check evaluations on the failed step (:meth:`DeferredRules.record`).

When they pass, the step reports their check results after its output (:meth:`check_results`).
"""

from __future__ import annotations

from typing import Any

from mesh_platform.contracts.model import Contract
from mesh_platform.quality.evaluate import QualityReport, evaluate
from mesh_platform.quality.rules import Rule
from mesh_platform.storage.gate import CommitGate


def is_key_rule(rule: Rule, contract: Contract) -> bool:
    """A blocking uniqueness rule over exactly the primary key's columns."""
    key = contract.primary_key
    if not key or not rule.blocking or rule.kind not in ("unique", "duplicate_values"):
        return False
    return sorted(rule.params.get("columns") or [rule.column]) == sorted(key)


class DeferredRules:
    """Rules running in a thread from construction; ``gate`` is what the publish's commit waits for."""

    def __init__(self, context, contract: Contract, table, rules: list[Rule], order: list[str], lake=None, reports: bool = True):
        self.context = context
        self.contract = contract
        self.rules = rules
        self.done = QualityReport(f"{contract.domain}/{contract.name}", table.num_rows)  # the other rules' report (set by audit)
        self.order = order  # every rule's name, in the order of the contract (the report's order)
        self.lake = lake
        self.reports = reports
        self.report: QualityReport | None = None  # every rule's result, once the deferred ones finished
        self.metadata: dict[str, Any] = {}  # the quality report's, for the materialization
        product = f"{contract.domain}/{contract.name}"
        # one DuckDB thread: the other rules, then the writer, have the other core
        self.gate = CommitGate(lambda: evaluate(table, rules, product, threads=1), name="primary key", then=self._finish)

    def merged(self, pending: QualityReport) -> QualityReport:
        rank = {name: i for i, name in enumerate(self.order)}
        results = sorted([*self.done.results, *pending.results], key=lambda r: rank.get(r.rule.name, len(rank)))
        return QualityReport(self.done.product, self.done.rows, results, self.done.seconds + pending.seconds)

    def _finish(self, pending: QualityReport) -> QualityReport:
        from mesh_platform.quality.results import QualityGateFailed, write_report

        report = self.report = self.merged(pending)
        if self.reports and self.lake is not None:
            self.metadata = write_report(self.context, self.contract, report, self.lake)
        if report.blocking_failures:
            raise QualityGateFailed(report.product, report.blocking_failures)
        return report

    def wait(self) -> QualityReport:
        """Every rule's result (the deferred ones waited for); raises as the gate does."""
        return self.gate.wait()

    def pending_results(self) -> list:
        names = {r.name for r in self.rules}
        return [r for r in (self.report.results if self.report else []) if r.rule.name in names]

    def check_results(self) -> list:
        """The deferred rules' asset check results (after the gate finished)."""
        from mesh_platform.quality.results import check_results

        return check_results(self.pending_results())

    def record(self, output_context) -> None:
        """On a failed publish: record the deferred rules' check evaluations on the step.

        The step cannot yield them any more (its output failed), so they are logged to the run's
        event log from the IO manager, as Dagster records the step's other check results.
        """
        try:
            self.gate.wait()
        except Exception:  # noqa: BLE001 - the failure itself is what the step raises
            pass
        step = getattr(output_context, "_step_context", None)
        if step is None or self.report is None:
            return
        from dagster._core.events import DagsterEvent

        for result in self.check_results():
            DagsterEvent.asset_check_evaluation(step, result.to_asset_check_evaluation(step))
