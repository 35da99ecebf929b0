"""A contract change judged by who reads it: breaking for named consumers, possibly breaking, compatible.

:mod:`mesh_platform.contracts.diff` says what changed and which changes need a major bump, from the
contract alone. This module weighs each such change against the product's readers
(:mod:`mesh_platform.mesh.consumers` finds them):

- **breaking** for named consumers: a major-level change (a column removed or retyped, a guarantee
  weakened, a column made stricter to access) touching a column some reader reads, or any
  product-wide major change (SLA loosened, access level, the contract deleted) while the changed
  major has readers. Each consumer is named with its owners, its port, and from the audit its last
  read and the version it read.
- **possibly breaking**: a major-level change no known reader touches. Never called compatible: a
  reader the mesh cannot see (a notebook over the files, a domain that did not load, an audit that
  could not be read) may still depend on it; the verdict says which evidence was missing.
- **compatible**: minor and patch changes (an optional column added, a guarantee tightened, words).

A rename is a removal plus an addition. A major bump is how a producer may break named consumers:
the gate passes it and names the consumers that must move to the new major (keep the previous
major's file with a ``deprecationDate`` to serve them meanwhile: ``docs/contracts.md``). The gate
fails only when a named consumer breaks without a major bump (or the version goes down);
``strict`` also fails possibly breaking changes without one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from xml.etree import ElementTree

from mesh_platform.contracts.diff import MAJOR, Change, DiffReport

BREAKING, POSSIBLY_BREAKING, COMPATIBLE = "breaking", "possibly breaking", "compatible"


@dataclass
class Reader:
    """One consumer reading a product: through which port, which columns, known how."""

    consumer: str  # the consumer domain
    asset: str  # its asset that reads (a product, private asset or dbt model); "" when only the audit knows
    port: str  # the input port (parameter name, dbt source, or the audited port such as "v1")
    major: int | None  # the major it pins (None: not known)
    columns: list[str] | None  # the columns it reads; None: every column
    via: str  # "input port" | "dbt model" | "audit"
    owners: list[str] = field(default_factory=list)
    last_read: str | None = None  # audit: the latest read in the window
    version_read: int | None = None  # audit: the table version that read saw
    note: str = ""  # how the columns were found when not the usual way

    def reads(self, column: str) -> bool:
        return self.columns is None or column in self.columns

    def describe(self) -> str:
        what = f"{self.consumer}" + (f".{self.asset}" if self.asset else "")
        where = f"{self.via} {self.port}" + (f" (major {self.major})" if self.major is not None else "")
        seen = f"; last read {self.last_read}" + (f" at version {self.version_read}" if self.version_read is not None else "") if self.last_read else ""
        owners = f"; owners {', '.join(self.owners)}" if self.owners else ""
        note = f"; {self.note}" if self.note else ""
        return f"{what} via {where}{seen}{owners}{note}"


@dataclass
class Impact:
    change: Change
    verdict: str
    readers: list[Reader]
    reason: str

    def as_dict(self) -> dict:
        return {
            "level": self.change.level,
            "field": self.change.field,
            "column": self.change.column,
            "message": self.change.message,
            "verdict": self.verdict,
            "reason": self.reason,
            "consumers": [asdict(r) for r in self.readers],
        }


@dataclass
class Judgement:
    """One contract change (old -> new) judged against its readers."""

    report: DiffReport
    impacts: list[Impact]
    must_move: list[Reader]  # readers of the old major, when the bump is major
    gaps: list[str]
    strict: bool = False

    @property
    def contract_id(self) -> str:
        return self.report.old.id

    @property
    def breaking(self) -> list[Impact]:
        return [i for i in self.impacts if i.verdict == BREAKING]

    @property
    def possibly_breaking(self) -> list[Impact]:
        return [i for i in self.impacts if i.verdict == POSSIBLY_BREAKING]

    @property
    def ok(self) -> bool:
        if self.report.bump == "downgrade":
            return False
        if self.report.bump == MAJOR:
            return True
        return not (self.breaking or (self.strict and self.possibly_breaking))

    def verdict(self) -> str:
        old, new = self.report.old.version, self.report.new.version
        if self.report.bump == "downgrade":
            return f"FAIL: version went down from {old} to {new}"
        if self.report.bump == MAJOR:
            if self.must_move:
                names = ", ".join(sorted({r.consumer for r in self.must_move}))
                return f"ok: major bump {old} -> {new}; consumers that must move to major {self.report.new.major}: {names}"
            return f"ok: major bump {old} -> {new}; no known consumer reads major {self.report.old.major}"
        if self.breaking:
            names = ", ".join(sorted({r.consumer for i in self.breaking for r in i.readers}))
            return f"FAIL: breaks {names} without a major bump ({old} -> {new} is a {self.report.bump or 'no'} bump)"
        if self.possibly_breaking:
            prefix = "FAIL (strict)" if self.strict else "ok, but"
            return f"{prefix}: {len(self.possibly_breaking)} possibly breaking change(s) with no known reader ({old} -> {new})"
        return f"ok: compatible ({old} -> {new}, {self.report.bump or 'unchanged'})"

    def as_dict(self) -> dict:
        return {
            "contract": self.contract_id,
            "old_version": self.report.old.version,
            "new_version": self.report.new.version,
            "bump": self.report.bump,
            "required_bump": self.report.required,
            "ok": self.ok,
            "verdict": self.verdict(),
            "changes": [i.as_dict() for i in self.impacts],
            "must_move": [asdict(r) for r in self.must_move],
            "gaps": list(self.gaps),
        }


def judge(report: DiffReport, readers: list[Reader], gaps: list[str], strict: bool = False) -> Judgement:
    """Each change of ``report`` judged against ``readers`` of the product (any major)."""
    old_major = report.old.major
    of_old = [r for r in readers if r.major in (None, old_major)]
    impacts = []
    for change in report.changes:
        if change.level != MAJOR:
            impacts.append(Impact(change, COMPATIBLE, [], f"a {change.level} change"))
            continue
        hit = [r for r in of_old if r.reads(change.column)] if change.column else list(of_old)
        if hit:
            what = f"reads {change.column}" if change.column else f"reads major {old_major}"
            impacts.append(Impact(change, BREAKING, hit, f"{len({r.consumer for r in hit})} consumer(s) {what}"))
        else:
            why = "no known reader " + (f"reads {change.column}" if change.column else f"reads major {old_major}")
            if gaps:
                why += "; but " + "; ".join(gaps)
            impacts.append(Impact(change, POSSIBLY_BREAKING, [], why))
    must_move = of_old if report.bump == MAJOR else []
    return Judgement(report, impacts, must_move, list(gaps), strict)


def junit(judgements: list[Judgement], name: str = "mesh contract check") -> str:
    """JUnit XML for CI: one test case per change; a failure where the gate fails."""
    suite = ElementTree.Element("testsuite", name=name)
    failures = 0
    cases = 0
    for judgement in judgements:
        impacts = judgement.impacts or [None]
        for impact in impacts:
            cases += 1
            title = f"{impact.change.field}: {impact.change.message}" if impact else "no changes"
            case = ElementTree.SubElement(suite, "testcase", classname=judgement.contract_id, name=title)
            if impact is None:
                continue
            text = f"{impact.verdict}: {impact.reason}" + "".join(f"\n  {r.describe()}" for r in impact.readers)
            blocking = not judgement.ok and (impact.verdict == BREAKING or (judgement.strict and impact.verdict == POSSIBLY_BREAKING))
            if blocking or (judgement.report.bump == "downgrade"):
                failures += 1
                ElementTree.SubElement(case, "failure", message=judgement.verdict()).text = text
            else:
                ElementTree.SubElement(case, "system-out").text = text
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)


__all__ = ["BREAKING", "COMPATIBLE", "POSSIBLY_BREAKING", "Impact", "Judgement", "Reader", "judge", "junit"]
