"""Typed model of an Open Data Contract Standard (ODCS) v3.1 data contract.

The model follows the official ODCS v3.1.0 JSON schema field for field (camelCase in YAML,
snake_case in Python), rejects unknown keys the way the schema does (so a typo such as
``requried: true`` is an error, not silently ignored), and adds the few rules the platform needs
to build a data product from a contract: a semantic version, a domain, exactly one schema object
(the product's table) and a logical type on every column.

Platform-specific settings live under ``customProperties`` as the standard asks; see
:data:`PLATFORM_PROPERTIES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_VERSIONS = ("v3.1.0", "v3.0.2", "v3.0.1", "v3.0.0")
LOGICAL_TYPES = ("string", "date", "timestamp", "time", "number", "integer", "object", "array", "boolean")
QUALITY_METRICS = ("nullValues", "missingValues", "invalidValues", "duplicateValues", "rowCount")
QUALITY_OPERATORS = (
    "must_be",
    "must_not_be",
    "must_be_greater_than",
    "must_be_greater_or_equal_to",
    "must_be_less_than",
    "must_be_less_or_equal_to",
    "must_be_between",
    "must_not_be_between",
)
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")

#: customProperties the platform reads (property name -> meaning).
PLATFORM_PROPERTIES = {
    "accessLevel": "who may read the output port: public, internal or restricted",
    "deprecationDate": "ISO date after which this major version's port stops being served",
    "quarantine": "limits on the share of source rows the product may reject: {warnAbove, failAbove} (0-1)",
}
QUARANTINE_LIMITS = {
    "warnAbove": "the quarantine check warns when the quarantined share of rows is above this (default 0)",
    "failAbove": "the check fails and nothing is published when the share is above this (default: never)",
}

LogicalType = Literal["string", "date", "timestamp", "time", "number", "integer", "object", "array", "boolean"]


@dataclass(frozen=True)
class QuarantineLimits:
    """``customProperties[quarantine]``: shares (0-1) of a product's rows that may be quarantined.

    The share is ``quarantined / (published + quarantined)``. At or below ``warn_above`` the check
    passes; above it the check warns; above ``fail_above`` (when set) it fails and blocks publish.
    """

    warn_above: float = 0.0
    fail_above: float | None = None


def quarantine_limit_problems(value: Any) -> list[tuple[str, str]]:
    """Problems with a ``quarantine`` custom property's value: (field path, message) pairs."""
    where = "customProperties[quarantine].value"
    if not isinstance(value, dict):
        return [(where, f"quarantine must be a mapping such as {{warnAbove: 0, failAbove: 0.05}}, got {value!r}")]
    problems = []
    for key in value:
        if key not in QUARANTINE_LIMITS:
            problems.append((f"{where}.{key}", f"unknown quarantine limit (expected one of: {', '.join(QUARANTINE_LIMITS)})"))
    for key in QUARANTINE_LIMITS:
        if key not in value:
            continue
        limit = value[key]
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit <= 1:
            problems.append((f"{where}.{key}", f"{key} must be a share of rows between 0 and 1 (0.05 = 5%), got {limit!r}"))
    if not problems and "failAbove" in value and value["failAbove"] < value.get("warnAbove", 0):
        problems.append((f"{where}.failAbove", f"failAbove ({value['failAbove']}) is below warnAbove ({value.get('warnAbove', 0)})"))
    return problems


def retention_problems(value: Any) -> list[tuple[str, str]]:
    """``customProperties[retention]`` (how many versions or days a port keeps, :mod:`mesh_platform.storage.retention`): problems with a ``retention`` custom property's value: (field path, message) pairs."""
    where = "customProperties[retention].value"
    if not isinstance(value, dict) or not value:
        return [(where, f"retention must be a mapping such as {{versions: 10, days: 30}}, got {value!r}")]
    problems = [(f"{where}.{key}", "unknown retention setting (expected versions and/or days)") for key in value if key not in ("versions", "days")]
    versions = value.get("versions")
    if "versions" in value and (isinstance(versions, bool) or not isinstance(versions, int) or versions < 1):
        problems.append((f"{where}.versions", f"versions must be a whole number of versions to keep, at least 1, got {versions!r}"))
    days = value.get("days")
    if "days" in value and (isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0):
        problems.append((f"{where}.days", f"days must be a positive number of days to keep versions for, got {days!r}"))
    return problems


class OdcsModel(BaseModel):
    """Base: camelCase aliases, unknown keys refused, immutable once parsed."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        frozen=True,
    )


class CustomProperty(OdcsModel):
    property: str
    value: Any
    id: str | None = None
    description: str | None = None


class AuthoritativeDefinition(OdcsModel):
    url: str
    type: str
    id: str | None = None
    description: str | None = None


class Extensible(OdcsModel):
    """Fields most ODCS elements share: tags and the standard's two extension points."""

    tags: list[str] = Field(default_factory=list)
    custom_properties: list[CustomProperty] = Field(default_factory=list)
    authoritative_definitions: list[AuthoritativeDefinition] = Field(default_factory=list)


class QualityRule(Extensible):
    """An ODCS quality entry: a library metric with one operator, plain text, SQL or a custom engine."""

    id: str | None = None
    name: str | None = None
    description: str | None = None
    type: Literal["library", "text", "sql", "custom"] = "library"
    metric: Literal["nullValues", "missingValues", "invalidValues", "duplicateValues", "rowCount"] | None = None
    rule: str | None = None  # deprecated in 3.1 in favour of `metric`
    arguments: dict[str, Any] | None = None
    must_be: Any = None
    must_not_be: Any = None
    must_be_greater_than: float | None = None
    must_be_greater_or_equal_to: float | None = None
    must_be_less_than: float | None = None
    must_be_less_or_equal_to: float | None = None
    must_be_between: list[float] | None = None
    must_not_be_between: list[float] | None = None
    unit: str | None = None
    dimension: Literal[
        "accuracy", "completeness", "conformity", "consistency", "coverage", "timeliness", "uniqueness"
    ] | None = None
    severity: str | None = None
    business_impact: str | None = None
    method: str | None = None
    query: str | None = None
    engine: str | None = None
    implementation: Any = None
    schedule: str | None = None
    scheduler: str | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> "QualityRule":
        if self.type in ("library", "sql"):
            used = [op for op in QUALITY_OPERATORS if getattr(self, op) is not None]
            if len(used) != 1:
                names = ", ".join(to_camel(op) for op in used) or "none"
                raise ValueError(f"a {self.type} quality rule needs exactly one operator (mustBe, mustBeLessThan, ...); found {names}")
            if self.type == "library" and self.metric is None and self.rule is None:
                raise ValueError("a library quality rule needs a `metric` (nullValues, missingValues, invalidValues, duplicateValues, rowCount)")
            if self.type == "sql" and not self.query:
                raise ValueError("an sql quality rule needs a `query`")
        return self

    @property
    def operator(self) -> tuple[str, Any] | None:
        for op in QUALITY_OPERATORS:
            value = getattr(self, op)
            if value is not None:
                return to_camel(op), value
        return None


class Relationship(OdcsModel):
    to: str | list[str]
    from_: str | list[str] | None = Field(default=None, alias="from")
    type: Literal["foreignKey"] | None = None
    id: str | None = None
    custom_properties: list[CustomProperty] = Field(default_factory=list)


class SchemaElement(Extensible):
    """What a table and a column of the contract's schema share."""

    name: str
    id: str | None = None
    physical_name: str | None = None
    physical_type: str | None = None
    business_name: str | None = None
    description: str | None = None
    quality: list[QualityRule] = Field(default_factory=list)
    relationships: list[Relationship] = Field(default_factory=list)


class SchemaProperty(SchemaElement):
    """One column of a product's table."""

    logical_type: LogicalType | None = None
    logical_type_options: dict[str, Any] | None = None
    required: bool = False
    unique: bool = False
    primary_key: bool = False
    primary_key_position: int = -1
    partitioned: bool = False
    partition_key_position: int = -1
    classification: str | None = None
    encrypted_name: str | None = None
    transform_source_objects: list[str] = Field(default_factory=list)
    transform_logic: str | None = None
    transform_description: str | None = None
    examples: list[Any] = Field(default_factory=list)
    critical_data_element: bool = False

    @field_validator("name")
    @classmethod
    def _column_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a column name cannot be empty")
        return value

    def custom(self, name: str, default: Any = None) -> Any:
        return next((p.value for p in self.custom_properties if p.property == name), default)

    def allowed_values(self) -> list | None:
        """The column's allowed values (an ``invalidValues`` rule with ``validValues``), if any."""
        for rule in self.quality:
            if rule.metric == "invalidValues" and rule.arguments and "validValues" in rule.arguments:
                return list(rule.arguments["validValues"])
        return None


class SchemaObject(SchemaElement):
    """The product's table: its columns and table-level quality rules."""

    logical_type: Literal["object"] = "object"
    data_granularity_description: str | None = None
    properties: list[SchemaProperty] = Field(default_factory=list)


class Description(OdcsModel):
    purpose: str | None = None
    usage: str | None = None
    limitations: str | None = None
    authoritative_definitions: list[AuthoritativeDefinition] = Field(default_factory=list)
    custom_properties: list[CustomProperty] = Field(default_factory=list)


class TeamMember(Extensible):
    username: str
    id: str | None = None
    name: str | None = None
    description: str | None = None
    role: str | None = None
    date_in: str | None = None
    date_out: str | None = None
    replaced_by_username: str | None = None


class Team(Extensible):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    members: list[TeamMember] = Field(default_factory=list)


class Role(OdcsModel):
    role: str
    id: str | None = None
    description: str | None = None
    access: str | None = None
    first_level_approvers: str | None = None
    second_level_approvers: str | None = None
    custom_properties: list[CustomProperty] = Field(default_factory=list)


class SlaProperty(OdcsModel):
    property: str
    value: Any
    id: str | None = None
    value_ext: Any = None
    unit: str | None = None
    element: str | None = None
    driver: str | None = None
    description: str | None = None
    scheduler: str | None = None
    schedule: str | None = None


class Support(OdcsModel):
    channel: str
    id: str | None = None
    url: str | None = None
    description: str | None = None
    tool: str | None = None
    scope: str | None = None
    invitation_url: str | None = None
    custom_properties: list[CustomProperty] = Field(default_factory=list)


class Contract(OdcsModel):
    """A parsed ODCS v3.1 data contract for one data product."""

    api_version: Literal["v3.1.0", "v3.0.2", "v3.0.1", "v3.0.0"]
    kind: Literal["DataContract"]
    id: str
    version: str
    status: str
    name: str | None = None
    domain: str | None = None
    data_product: str | None = None
    tenant: str | None = None
    tags: list[str] = Field(default_factory=list)
    description: Description | None = None
    schema_objects: list[SchemaObject] = Field(default_factory=list, alias="schema")
    servers: list[dict[str, Any]] = Field(default_factory=list)
    support: list[Support] = Field(default_factory=list)
    price: dict[str, Any] | None = None
    team: Team | None = None
    roles: list[Role] = Field(default_factory=list)
    sla_default_element: str | None = None
    sla_properties: list[SlaProperty] = Field(default_factory=list)
    authoritative_definitions: list[AuthoritativeDefinition] = Field(default_factory=list)
    custom_properties: list[CustomProperty] = Field(default_factory=list)
    contract_created_ts: str | None = None

    _source: Path | None = PrivateAttr(default=None)
    _digest: str | None = PrivateAttr(default=None)

    @field_validator("id")
    @classmethod
    def _non_empty_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the contract id cannot be empty")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(str(value)):
            raise ValueError(f"version must be a semantic version MAJOR.MINOR.PATCH, got {value!r}")
        return str(value)

    @field_validator("team", mode="before")
    @classmethod
    def _team_form(cls, value: Any) -> Any:
        # ODCS 3.0 wrote the team as a list of members; 3.1 made it an object. Accept both.
        if isinstance(value, list):
            return {"members": value}
        return value

    # -- what the platform reads off a contract -------------------------------------------------

    @property
    def source(self) -> Path | None:
        """The YAML file this contract was parsed from."""
        return self._source

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def table(self) -> SchemaObject:
        return self.schema_objects[0]

    @property
    def columns(self) -> list[SchemaProperty]:
        return self.table.properties

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> SchemaProperty:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.id} has no column {name!r}")

    @property
    def primary_key(self) -> list[str]:
        keyed = [c for c in self.columns if c.primary_key]
        return [c.name for c in sorted(keyed, key=lambda c: (c.primary_key_position < 0, c.primary_key_position))]

    @property
    def purpose(self) -> str | None:
        return self.description.purpose if self.description else None

    @property
    def owners(self) -> list[str]:
        """Dagster owners: ``team:<name>`` plus members whose username is an email address."""
        if self.team is None:
            return []
        owners = []
        if self.team.name:
            owners.append("team:" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.team.name.strip()).strip("-").lower())
        owners += [m.username for m in self.team.members if "@" in m.username]
        return owners

    def custom(self, name: str, default: Any = None) -> Any:
        return next((p.value for p in self.custom_properties if p.property == name), default)

    @property
    def deprecation_date(self) -> date | None:
        value = self.custom("deprecationDate")
        return date.fromisoformat(str(value)) if value else None

    @property
    def quarantine_limits(self) -> QuarantineLimits:
        value = self.custom("quarantine")
        if value is None:
            return QuarantineLimits()
        fail = value.get("failAbove")
        return QuarantineLimits(float(value.get("warnAbove", 0.0)), None if fail is None else float(fail))

    def retired(self, today: date | None = None) -> bool:
        """A retired contract's port is no longer served (status ``retired`` or past its deprecation date)."""
        if self.status == "retired":
            return True
        deadline = self.deprecation_date
        return deadline is not None and (today or date.today()) > deadline

    def sla(self, name: str) -> SlaProperty | None:
        return next((s for s in self.sla_properties if s.property == name), None)

    def sla_hours(self, name: str) -> float | None:
        """An SLA duration (``latency``, ``frequency``) in hours; the unit defaults to days.

        Contracts with an unreadable duration do not load (:func:`platform_problems`), so every
        reader (freshness, automation, contract diffs) sees the same value.
        """
        sla = self.sla(name)
        if sla is None:
            return None
        return sla_duration_hours(sla.value, sla.unit)

    @property
    def classifications(self) -> list[str]:
        return sorted({c.classification for c in self.columns if c.classification})


UNIT_HOURS = {"m": 1 / 60, "min": 1 / 60, "h": 1, "hr": 1, "hour": 1, "hours": 1, "d": 24, "day": 24, "days": 24,
              "w": 168, "week": 168, "weeks": 168, "y": 8760, "yr": 8760, "year": 8760, "years": 8760}
DURATION_SLAS = ("latency", "frequency")  # the SLA properties the platform reads as durations


def sla_duration_hours(value: Any, unit: str | None) -> float:
    """``value`` ``unit`` in hours (``unit`` defaults to days); ValueError when it is not a duration."""
    key = str(unit or "d").lower()
    if key not in UNIT_HOURS:
        raise ValueError(f"unknown unit {unit!r} (use one of {', '.join(sorted(UNIT_HOURS))})")
    try:
        return float(value) * UNIT_HOURS[key]
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None


def platform_problems(contract: Contract) -> list[tuple[str, str]]:
    """What the platform needs beyond ODCS to publish a product: (field path, problem) pairs."""
    problems: list[tuple[str, str]] = []
    for sla in contract.sla_properties:
        if sla.property in DURATION_SLAS:
            try:
                sla_duration_hours(sla.value, sla.unit)
            except ValueError as exc:
                problems.append((f"slaProperties[{sla.property}]", f"cannot read {sla.value!r} {sla.unit or ''} as a duration: {exc}".replace("  ", " ")))
    if not contract.name:
        problems.append(("name", "a data product contract needs a `name`: the product's name (snake_case)"))
    elif not IDENTIFIER.match(contract.name):
        problems.append(("name", f"product name {contract.name!r} must be snake_case (a-z, 0-9, _), starting with a letter"))
    if not contract.domain:
        problems.append(("domain", "a data product contract needs the `domain` that owns it"))
    elif not IDENTIFIER.match(contract.domain):
        problems.append(("domain", f"domain {contract.domain!r} must be snake_case (a-z, 0-9, _), starting with a letter"))
    raw_date = contract.custom("deprecationDate")
    if raw_date is not None:
        try:
            date.fromisoformat(str(raw_date))
        except ValueError:
            problems.append(("customProperties[deprecationDate].value", f"deprecationDate must be an ISO date (YYYY-MM-DD), got {raw_date!r}"))
    raw_quarantine = contract.custom("quarantine")
    if raw_quarantine is not None:
        problems.extend(quarantine_limit_problems(raw_quarantine))
    raw_retention = contract.custom("retention")
    if raw_retention is not None:
        problems.extend(retention_problems(raw_retention))
    if len(contract.schema_objects) == 1:
        from mesh_platform.products.partitions import partitioning_problems

        problems.extend(partitioning_problems(contract))
    if len(contract.schema_objects) != 1:
        problems.append(("schema", f"a data product publishes exactly one table: expected 1 schema object, found {len(contract.schema_objects)}"))
        return problems
    table = contract.table
    if not table.properties:
        problems.append((f"schema[{table.name}].properties", "the table declares no columns"))
    seen: set[str] = set()
    for col in table.properties:
        where = f"schema[{table.name}].properties[{col.name}]"
        if col.name in seen:
            problems.append((where + ".name", f"column {col.name!r} is declared twice"))
        seen.add(col.name)
        if col.logical_type is None:
            problems.append((where + ".logicalType", "every column needs a logicalType (" + ", ".join(LOGICAL_TYPES) + ")"))
        elif col.logical_type in ("object", "array") and (table.physical_type or "").lower() != "object":
            problems.append((where + ".logicalType", f"logicalType {col.logical_type!r} is not supported for a published column yet"))
    return problems
