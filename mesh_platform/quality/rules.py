"""Quality rules derived from a contract: property constraints and ODCS quality entries.

Every rule measures one number over the table (a count of unexpected rows, a percentage, the row
count, the result of a SQL query) and compares it with one ODCS operator (``mustBe``,
``mustBeLessThan``, ...). Property constraints become rules too:

| contract                                     | rule (check name)                       |
| -------------------------------------------- | --------------------------------------- |
| ``required: true`` / ``primaryKey``          | ``<col>_not_null``: nulls must be 0 (all reported as one asset check, ``required_columns``) |
| ``unique: true`` / single ``primaryKey``     | ``<col>_unique``: duplicates must be 0  |
| composite ``primaryKey``                     | ``primary_key_unique``                  |
| ``logicalTypeOptions.minimum/maximum``       | ``<col>_range``                         |
| ``logicalTypeOptions.pattern``               | ``<col>_pattern``                       |
| ``logicalTypeOptions.minLength/maxLength``   | ``<col>_length``                        |
| quality ``nullValues`` / ``missingValues``   | ``<col>_null_values`` / ``_missing_values`` |
| quality ``invalidValues`` (validValues/pattern) | ``<col>_invalid_values``            |
| quality ``duplicateValues``                  | ``<col>_duplicate_values`` (or table-level over ``arguments.properties``) |
| quality ``rowCount``                         | ``row_count``                           |
| quality ``type: sql``                        | ``<col or table>_sql_<n>``: the query's single number |

One asset check per rule, except the required columns: their ``<col>_not_null`` rules are each
evaluated (and each an expectation of the quality report), but Dagster gets one check,
``required_columns``, with the nulls of every required column in its metadata. A passing
not-null check per column says nothing the one check does not, and each asset check costs Dagster
an event or three per run (its plan, its output, its evaluation): on a product of a dozen required
columns that was most of a new day's run (``docs/automation.md``). It is part of the schema, as
dbt's model contracts treat ``not_null``: a constraint of the contract, not a test per column.

Severity: a rule whose ODCS ``severity`` is ``error`` (the default, and always for property
constraints) is **blocking**: when it fails, nothing is published. ``warning``/``warn``/``info``
rules publish anyway and show as warnings. ``type: text`` rules document and are not executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mesh_platform.contracts.model import Contract, QualityRule, SchemaProperty

NON_BLOCKING = {"warning", "warn", "info", "low", "minor"}
REQUIRED_CHECK = "required_columns"
"""The one asset check of every required column's ``<col>_not_null`` rule."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    column: str | None
    operator: str
    threshold: Any
    blocking: bool
    description: str
    source: str
    params: dict = field(default_factory=dict)
    unit: str = "rows"
    check: str = ""
    """The asset check that reports this rule, when it is not the rule's own (:data:`REQUIRED_CHECK`)."""

    @property
    def check_name(self) -> str:
        return self.check or self.name

    def accepts(self, value: float | None) -> bool:
        return compare(self.operator, value, self.threshold)

    @property
    def expected(self) -> str:
        return f"{self.operator} {self.threshold}" + (" %" if self.unit == "percent" else "")


def compare(operator: str, value: float | None, threshold: Any) -> bool:
    if value is None:
        return False
    match operator:
        case "mustBe":
            return value == threshold
        case "mustNotBe":
            return value != threshold
        case "mustBeGreaterThan":
            return value > threshold
        case "mustBeGreaterOrEqualTo":
            return value >= threshold
        case "mustBeLessThan":
            return value < threshold
        case "mustBeLessOrEqualTo":
            return value <= threshold
        case "mustBeBetween":
            return threshold[0] <= value <= threshold[1]
        case "mustNotBeBetween":
            return not threshold[0] <= value <= threshold[1]
    raise ValueError(f"unknown operator {operator!r}")


def check_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(p for p in parts if p)).strip("_").lower()


def _property_rules(contract: Contract, col: SchemaProperty, where: str) -> list[Rule]:
    rules: list[Rule] = []
    single_pk = col.primary_key and len(contract.primary_key) == 1
    if col.required or col.primary_key:
        rules.append(Rule(check_name(col.name, "not_null"), "not_null", col.name, "mustBe", 0, True, f"{col.name} has no nulls", where + ".required", check=REQUIRED_CHECK))
    if col.unique or single_pk:
        rules.append(Rule(check_name(col.name, "unique"), "unique", col.name, "mustBe", 0, True, f"{col.name} is unique", where + ".unique"))
    opts = col.logical_type_options or {}
    bounds = {k: opts[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in opts}
    if bounds and col.logical_type in ("integer", "number", "date", "timestamp"):
        text = ", ".join(f"{k} {v}" for k, v in bounds.items())
        rules.append(Rule(check_name(col.name, "range"), "between", col.name, "mustBe", 0, True, f"{col.name} within {text}", where + ".logicalTypeOptions", dict(bounds)))
    if "pattern" in opts and col.logical_type == "string":
        rules.append(Rule(check_name(col.name, "pattern"), "regex", col.name, "mustBe", 0, True, f"{col.name} matches {opts['pattern']}", where + ".logicalTypeOptions.pattern", {"pattern": opts["pattern"]}))
    if ("minLength" in opts or "maxLength" in opts) and col.logical_type == "string":
        params = {k: opts[k] for k in ("minLength", "maxLength") if k in opts}
        rules.append(Rule(check_name(col.name, "length"), "length", col.name, "mustBe", 0, True, f"{col.name} length within {params}", where + ".logicalTypeOptions", params))
    return rules


def _odcs_rule(rule: QualityRule, column: str | None, where: str, index: int, taken: set[str]) -> Rule | None:
    if rule.type in ("text", "custom"):
        return None
    operator, threshold = rule.operator
    blocking = (rule.severity or "error").lower() not in NON_BLOCKING
    unit = (rule.unit or "rows").lower()
    args = rule.arguments or {}
    if rule.type == "sql":
        kind, params, base = "sql", {"query": rule.query}, f"sql_{index}"
    else:
        metric = rule.metric or rule.rule
        params = {}
        if metric == "rowCount":
            kind, base = "row_count", "row_count"
        elif metric == "nullValues":
            kind, base = "null_values", "null_values"
        elif metric == "missingValues":
            kind, base = "missing_values", "missing_values"
            params = {"missing": list(args.get("missingValues", [None]))}
        elif metric == "invalidValues":
            kind, base = "invalid_values", "invalid_values"
            params = {k: args[k] for k in ("validValues", "pattern") if k in args}
        elif metric == "duplicateValues":
            columns = args.get("properties") or ([column] if column else [])
            kind, base, params = "duplicate_values", "duplicate_values", {"columns": list(columns)}
        else:  # deprecated 3.0 free-form `rule` names we cannot execute
            return None
    name = rule.name or check_name(column or "", base)
    while name in taken:
        name = check_name(name, str(index))
    description = rule.description or f"{column + ': ' if column else ''}{kind.replace('_', ' ')} {operator} {threshold}"
    return Rule(name, kind, column, operator, threshold, blocking, description, f"{where}.quality[{index}]", params, unit)


def rules_for(contract: Contract) -> list[Rule]:
    """Every executable quality rule of a contract, with unique check names."""
    table = contract.table
    rules: list[Rule] = []
    for col in contract.columns:
        rules.extend(_property_rules(contract, col, f"schema[{table.name}].properties[{col.name}]"))
    key = contract.primary_key
    if len(key) > 1:
        rules.append(Rule("primary_key_unique", "duplicate_values", None, "mustBe", 0, True, f"({', '.join(key)}) is unique", f"schema[{table.name}].properties.primaryKey", {"columns": key}))
    taken = {r.name for r in rules} | {REQUIRED_CHECK}  # no ODCS rule takes the required columns' check name
    for col in contract.columns:
        for i, q in enumerate(col.quality):
            rule = _odcs_rule(q, col.name, f"schema[{table.name}].properties[{col.name}]", i, taken)
            if rule is not None:
                rules.append(rule)
                taken.add(rule.name)
    for i, q in enumerate(table.quality):
        rule = _odcs_rule(q, None, f"schema[{table.name}]", i, taken)
        if rule is not None:
            rules.append(rule)
            taken.add(rule.name)
    return rules
