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
- **breaking** as well: a new or tighter constraint on a column some reader reads (a bound, a pattern,
  a quality rule added; ``Change.constrains``). The producer's data that was fine so far may be
  refused at publish, and a refused publish keeps the last good version: those readers would stop
  getting new data. On a column nobody reads it is compatible.
- **compatible**: minor and patch changes (an optional column added, SLA tightened, words).

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
            "required_bump": MAJOR if self.breaking else self.report.required,
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
        if change.level != MAJOR and change.constrains and change.column:
            hit = [r for r in of_old if r.reads(change.column)]
            if hit:
                impacts.append(Impact(change, BREAKING, hit, f"{len({r.consumer for r in hit})} consumer(s) read {change.column}, and the new "
                                      "constraint may refuse data published so far: the product would stop refreshing for them"))
            else:
                impacts.append(Impact(change, COMPATIBLE, [], f"a new constraint on {change.column}, which no known reader reads"))
            continue
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


def junit(rows: list[tuple[str, str, object]], name: str = "mesh contract check") -> str:
    """JUnit XML for CI, from the command's rows (label, "ok" or "FAIL", a :class:`Judgement` or a
    message): one test case per change; a failure where the gate fails. A contract file that could
    not be judged (unreadable, deleted while read) is a case of its own, failed when it fails the
    gate, so the report never shows no failure for a command that exits 1."""
    suite = ElementTree.Element("testsuite", name=name)
    failures = 0
    cases = 0

    def case(classname: str, title: str, failure: str | None, text: str) -> None:
        nonlocal failures, cases
        cases += 1
        element = ElementTree.SubElement(suite, "testcase", classname=classname, name=title)
        if failure is not None:
            failures += 1
            ElementTree.SubElement(element, "failure", message=failure).text = text
        else:
            ElementTree.SubElement(element, "system-out").text = text

    for label, status, item in rows:
        if not isinstance(item, Judgement):
            case(label, "contract file", str(item) if status == "FAIL" else None, str(item))
            continue
        failed_before = failures
        for impact in item.impacts:
            text = f"{impact.verdict}: {impact.reason}" + "".join(f"\n  {r.describe()}" for r in impact.readers)
            blocking = not item.ok and (impact.verdict == BREAKING or (item.strict and impact.verdict == POSSIBLY_BREAKING))
            case(item.contract_id, f"{impact.change.field}: {impact.change.message}", item.verdict() if blocking else None, text)
        if status == "FAIL" and failures == failed_before:  # a version gone down, an error beside the changes
            case(item.contract_id, "version and gate", item.verdict(), "\n".join([item.verdict(), *item.gaps]))
        elif not item.impacts:
            case(item.contract_id, "no changes", None, item.verdict())
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)


__all__ = ["BREAKING", "COMPATIBLE", "POSSIBLY_BREAKING", "Impact", "Judgement", "Reader", "judge", "junit"]
