"""Classify the changes between two versions of a contract, and check the version bump.

A change is **breaking** (needs a major bump) when a consumer written against the old contract can
break: a column disappears or changes type, a guarantee is weakened (required, unique, primary key,
allowed values, range, pattern, lengths, a quality rule removed, SLA), the column may hold values
it could not hold before (allowed values added, range widened), or the data becomes less protected
(classification loosened). Adding an optional column, tightening a guarantee, adding a quality
rule is **minor**; wording is a **patch**.

A minor change that puts a new or tighter constraint on a column's values (a bound added or
raised, a pattern, lengths, uniqueness, an allowed-values or other quality rule added) is marked
``constrains``: data the producer published so far may now be refused, and a refused publish never
replaces the last good version, so the product's readers would stop getting new data. The gate
(:mod:`mesh_platform.contracts.impact`) judges such a change breaking when a consumer reads that
column, compatible otherwise. Decisions beyond the obvious ones, written down:

- optional -> required is breaking, as the project decided (producers that wrote nulls now fail,
  and ODCS tooling treats it so); required -> optional is breaking too (consumers relied on it).
- Any logicalType change is breaking, widening included: it changes the published Parquet type.
- A classification made *stricter* is breaking as well: consumers may lose access to the column.
- Adding a *required* column is minor: existing consumers do not read it.
- Allowed values added is breaking, like a widened range: a consumer that handles every value it
  was promised (a status it branches on) meets one it does not know.
- A changed pattern is breaking (it may admit other shapes), and constrains (it may refuse old ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh_platform.contracts.model import Contract, SchemaProperty

MAJOR, MINOR, PATCH = "major", "minor", "patch"
ORDER = {PATCH: 0, MINOR: 1, MAJOR: 2}
CLASSIFICATION_RANK = {"public": 0, "internal": 1, "confidential": 2, "pii": 3, "restricted": 4}


@dataclass(frozen=True)
class Change:
    level: str
    field: str
    message: str
    column: str | None = None  # the column it touches; None for a product-wide change
    constrains: bool = False  # a new or tighter constraint on the column's values (see the module's docstring)

    def __str__(self) -> str:
        return f"{self.level:5}  {self.field}: {self.message}"


def _valid_values(col: SchemaProperty) -> set | None:
    values = col.allowed_values()
    return None if values is None else set(map(str, values))


def _bound(col: SchemaProperty, name: str) -> Any:
    return (col.logical_type_options or {}).get(name)


def _wider(wider, a: Any, b: Any) -> bool:
    try:
        return bool(wider(a, b))
    except TypeError:  # bounds of different kinds (a date and a number): not comparable, so not narrower
        return True


def _other_rules(col: SchemaProperty) -> dict[str, str]:
    """The column's quality rules other than its allowed values (compared on their own above), each
    as a canonical key -> a short description; wording (name, description, dimension) is ignored."""
    import json

    out = {}
    for rule in col.quality:
        if rule.metric == "invalidValues" and rule.arguments and "validValues" in rule.arguments:
            continue
        data = rule.model_dump(exclude_none=True, by_alias=True, exclude={"id", "name", "description", "dimension", "business_impact"})
        key = json.dumps(data, sort_keys=True, default=str)
        out[key] = rule.metric or rule.rule or rule.type or "rule"
    return out


def _column_changes(old: SchemaProperty, new: SchemaProperty, where: str) -> list[Change]:
    changes: list[Change] = []
    if old.logical_type != new.logical_type:
        changes.append(Change(MAJOR, where + ".logicalType", f"type changed from {old.logical_type} to {new.logical_type}", column=old.name))
    elif (old.logical_type_options or {}).get("format") != (new.logical_type_options or {}).get("format"):
        changes.append(Change(MAJOR, where + ".logicalTypeOptions.format", "physical format changed", column=old.name))
    old_req, new_req = old.required or old.primary_key, new.required or new.primary_key
    if old_req != new_req:
        what = "optional to required" if new_req else "required to optional"
        changes.append(Change(MAJOR, where + ".required", f"changed from {what}", column=old.name))
    if old.unique and not new.unique:
        changes.append(Change(MAJOR, where + ".unique", "no longer unique", column=old.name))
    elif new.unique and not old.unique:
        changes.append(Change(MINOR, where + ".unique", "now unique", column=old.name, constrains=True))
    if old.primary_key != new.primary_key:
        changes.append(Change(MAJOR, where + ".primaryKey", "primary key changed", column=old.name))
    old_rank = CLASSIFICATION_RANK.get(old.classification or "", -1)
    new_rank = CLASSIFICATION_RANK.get(new.classification or "", -1)
    if old.classification != new.classification:
        if new_rank < old_rank:
            changes.append(Change(MAJOR, where + ".classification", f"loosened from {old.classification} to {new.classification}", column=old.name))
        else:
            changes.append(Change(MAJOR, where + ".classification", f"tightened from {old.classification} to {new.classification}; consumers may lose access", column=old.name))
    old_values, new_values = _valid_values(old), _valid_values(new)
    if old_values is not None and new_values is not None:
        if old_values - new_values:
            changes.append(Change(MAJOR, where + ".quality.validValues", "allowed values removed: " + ", ".join(sorted(old_values - new_values)), column=old.name))
        if new_values - old_values:
            changes.append(Change(MAJOR, where + ".quality.validValues", "allowed values added: " + ", ".join(sorted(new_values - old_values))
                                  + "; consumers may meet values they do not handle", column=old.name))
    elif old_values is not None:
        changes.append(Change(MAJOR, where + ".quality.validValues", "allowed-values rule removed", column=old.name))
    elif new_values is not None:
        changes.append(Change(MINOR, where + ".quality.validValues", "allowed-values rule added", column=old.name, constrains=True))
    lower, upper = (lambda a, b: b < a), (lambda a, b: b > a)  # is the new bound wider than the old?
    for name, wider in (("minimum", lower), ("exclusiveMinimum", lower), ("minLength", lower),
                        ("maximum", upper), ("exclusiveMaximum", upper), ("maxLength", upper)):
        a, b = _bound(old, name), _bound(new, name)
        if a is not None and b is None:
            changes.append(Change(MAJOR, where + f".logicalTypeOptions.{name}", f"{name} {a} removed", column=old.name))
        elif a is not None and b is not None and a != b:
            widened = _wider(wider, a, b)
            changes.append(Change(MAJOR if widened else MINOR, where + f".logicalTypeOptions.{name}", f"{name} changed from {a} to {b}",
                                  column=old.name, constrains=not widened))
        elif a is None and b is not None:
            changes.append(Change(MINOR, where + f".logicalTypeOptions.{name}", f"{name} {b} added", column=old.name, constrains=True))
    a, b = _bound(old, "pattern"), _bound(new, "pattern")
    if a is not None and b is None:
        changes.append(Change(MAJOR, where + ".logicalTypeOptions.pattern", f"pattern {a!r} removed", column=old.name))
    elif a is not None and b is not None and a != b:
        changes.append(Change(MAJOR, where + ".logicalTypeOptions.pattern", f"pattern changed from {a!r} to {b!r}", column=old.name, constrains=True))
    elif a is None and b is not None:
        changes.append(Change(MINOR, where + ".logicalTypeOptions.pattern", f"pattern {b!r} added", column=old.name, constrains=True))
    old_rules, new_rules = _other_rules(old), _other_rules(new)
    for rule in sorted(set(old_rules) - set(new_rules)):
        changes.append(Change(MAJOR, where + ".quality", f"quality rule removed: {old_rules[rule]}", column=old.name))
    for rule in sorted(set(new_rules) - set(old_rules)):
        changes.append(Change(MINOR, where + ".quality", f"quality rule added: {new_rules[rule]}", column=old.name, constrains=True))
    if (old.description or "") != (new.description or ""):
        changes.append(Change(PATCH, where + ".description", "description changed", column=old.name))
    return changes


def diff_contracts(old: Contract, new: Contract) -> list[Change]:
    changes: list[Change] = []
    for name in ("id", "name", "domain"):
        if getattr(old, name) != getattr(new, name):
            changes.append(Change(MAJOR, name, f"changed from {getattr(old, name)!r} to {getattr(new, name)!r}"))
    table = new.table.name if new.schema_objects else "?"
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    for name, col in old_cols.items():
        where = f"schema[{table}].properties[{name}]"
        if name not in new_cols:
            kind = "required " if col.required or col.primary_key else ""
            changes.append(Change(MAJOR, where, f"{kind}column removed", column=name))
        else:
            changes.extend(_column_changes(col, new_cols[name], where))
    for name, col in new_cols.items():
        if name not in old_cols:
            kind = "required" if col.required or col.primary_key else "optional"
            changes.append(Change(MINOR, f"schema[{table}].properties[{name}]", f"{kind} column added", column=name))
    for name in ("latency", "frequency"):
        a, b = old.sla_hours(name), new.sla_hours(name)
        if a is not None and b is None:
            changes.append(Change(MAJOR, f"slaProperties[{name}]", f"{name} SLA removed"))
        elif a is not None and b is not None and b > a:
            changes.append(Change(MAJOR, f"slaProperties[{name}]", f"{name} SLA loosened from {a:g}h to {b:g}h"))
        elif a is not None and b is not None and b < a:
            changes.append(Change(MINOR, f"slaProperties[{name}]", f"{name} SLA tightened from {a:g}h to {b:g}h"))
        elif a is None and b is not None:
            changes.append(Change(MINOR, f"slaProperties[{name}]", f"{name} SLA added"))
    if old.custom("accessLevel") != new.custom("accessLevel"):
        changes.append(Change(MAJOR, "customProperties[accessLevel]", f"access level changed from {old.custom('accessLevel')} to {new.custom('accessLevel')}"))
    old_rules = len(old.table.quality) if old.schema_objects else 0
    new_rules = len(new.table.quality) if new.schema_objects else 0
    if new_rules != old_rules:
        changes.append(Change(MINOR, f"schema[{table}].quality", f"table-level quality rules: {old_rules} -> {new_rules}"))
    if old.purpose != new.purpose:
        changes.append(Change(PATCH, "description.purpose", "purpose changed"))
    if old.status != new.status:
        changes.append(Change(MINOR, "status", f"status changed from {old.status} to {new.status}"))
    return changes


def _parse(version: str) -> tuple[int, int, int]:
    core = version.split("-", 1)[0].split("+", 1)[0]
    major, minor, patch = (int(x) for x in core.split("."))
    return major, minor, patch


def required_bump(changes: list[Change]) -> str | None:
    if not changes:
        return None
    return max((c.level for c in changes), key=ORDER.__getitem__)


def actual_bump(old: Contract, new: Contract) -> str | None:
    a, b = _parse(old.version), _parse(new.version)
    if b < a:
        return "downgrade"
    if b[0] > a[0]:
        return MAJOR
    if b[1] > a[1]:
        return MINOR
    if b[2] > a[2]:
        return PATCH
    return None


@dataclass
class DiffReport:
    old: Contract
    new: Contract
    changes: list[Change]

    @property
    def required(self) -> str | None:
        return required_bump(self.changes)

    @property
    def bump(self) -> str | None:
        return actual_bump(self.old, self.new)

    @property
    def ok(self) -> bool:
        """False when breaking changes come without a major bump (or the version went down)."""
        if self.bump == "downgrade":
            return False
        return not (self.required == MAJOR and self.bump != MAJOR)

    def verdict(self) -> str:
        if self.bump == "downgrade":
            return f"version went down from {self.old.version} to {self.new.version}"
        if not self.ok:
            return f"breaking changes need a major version bump: {self.old.version} -> {self.new.version} is a {self.bump or 'no'} bump"
        if self.required and (self.bump is None or ORDER[self.bump] < ORDER[self.required]):
            return f"ok, but these changes suggest a {self.required} bump ({self.old.version} -> {self.new.version})"
        return f"ok: {self.old.version} -> {self.new.version} ({self.bump or 'unchanged'})"


def diff(old: Contract, new: Contract) -> DiffReport:
    return DiffReport(old, new, diff_contracts(old, new))
