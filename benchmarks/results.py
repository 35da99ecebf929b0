"""What a benchmark reports, and how a run is written out (``latest.json``, ``latest.md``, console).

Every measured figure is a :class:`Case`: an absolute median time, the peak memory of the process
that measured it, and a ratio against a baseline case measured in the same run on the same machine.
:class:`Target` records a goal from the brief and whether this run met it; the harness never fails
because a target is missed (tests assert structure, never speed).
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "skipped", "error"]


@dataclass
class Case:
    """One measured configuration (e.g. "platform Lake path" at "1M rows")."""

    name: str
    size: str
    seconds: float | None
    baseline: str | None = None
    """Name of the case (same size) this one is compared with; ``None`` for a baseline itself."""
    _: KW_ONLY
    ratio: float | None = None
    cpu_seconds: float | None = None
    """CPU seconds (all threads) of what ``seconds`` measures: robust to other load on the machine."""
    peak_rss_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    description: str
    limit: float
    unit: str
    value: float | None
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.met is None and self.value is not None:
            self.met = self.value <= self.limit


@dataclass
class BenchmarkResult:
    name: str
    description: str
    status: Status = "ok"
    reason: str | None = None
    baseline: str | None = None
    cases: list[Case] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None

    @classmethod
    def skipped(cls, name: str, description: str, reason: str) -> "BenchmarkResult":
        return cls(name, description, status="skipped", reason=reason)

    def case(self, name: str, size: str) -> Case | None:
        return next((c for c in self.cases if c.name == name and c.size == size), None)

    def add_ratios(self) -> None:
        """Fill every case's ratio against its baseline case of the same size."""
        for case in self.cases:
            base = self.case(case.baseline, case.size) if case.baseline else case
            if base is not None and base.seconds and case.seconds is not None:
                case.ratio = round(case.seconds / base.seconds, 3)


# -- output ---------------------------------------------------------------------------------------


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _fmt_ratio(case: Case) -> str:
    return "-" if case.ratio is None else f"{case.ratio:.2f}x"


def _fmt_target(target: Target) -> str:
    if target.unit in ("x", "s"):
        value = "-" if target.value is None else (f"{target.value:.2f}x" if target.unit == "x" else f"{target.value:.2f} s")
        limit = f"{target.limit:g}x" if target.unit == "x" else f"{target.limit:g} s"
    else:  # a count, e.g. "runs"
        value = "-" if target.value is None else f"{target.value:g} {target.unit}"
        limit = f"{target.limit:g} {target.unit}"
    verdict = {True: "met", False: "MISSED", None: "not measured"}[target.met]
    return f"{value} (limit {limit}): {verdict}"


def table_rows(results: list[BenchmarkResult]) -> list[list[str]]:
    rows = []
    for result in results:
        if result.status != "ok":
            reason = (result.reason or "").strip().splitlines()[0] if result.reason else ""
            rows.append([result.name, f"{result.status}: {reason[:160]}", "", "", "", "", "", ""])
            continue
        for case in result.cases:
            rows.append(
                [
                    result.name,
                    case.name,
                    case.size,
                    _fmt_seconds(case.seconds),
                    _fmt_seconds(case.cpu_seconds),
                    _fmt_ratio(case),
                    case.baseline or "(baseline)",
                    "-" if case.peak_rss_mb is None else f"{case.peak_rss_mb:,.0f}",
                ]
            )
    return rows


HEADER = ["benchmark", "case", "size", "median s", "CPU s", "ratio", "vs", "peak RSS MiB"]


def target_rows(results: list[BenchmarkResult]) -> list[list[str]]:
    return [[r.name, t.description, _fmt_target(t)] for r in results for t in r.targets]


def render_text(results: list[BenchmarkResult]) -> str:
    def block(header: list[str], rows: list[list[str]]) -> list[str]:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return [line(header), line(["-" * w for w in widths]), *map(line, rows)]

    lines = block(HEADER, table_rows(results))
    targets = target_rows(results)
    if targets:
        lines += ["", *block(["benchmark", "target", "this run"], targets)]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(escape, r)) + " |" for r in rows]


def render_markdown(results: list[BenchmarkResult], run: dict[str, Any]) -> str:
    machine = run["machine"]
    git = run["git"]
    lines = [
        f"# Benchmark results ({'quick' if run['quick'] else 'full'} run)",
        "",
        f"- started {run['started_at']}, took {run['seconds']:.0f} s",
        f"- commit `{git.get('commit')}`{' (with uncommitted changes)' if git.get('dirty') else ''}",
        f"- {machine['cpu_count']} CPU(s) ({machine.get('cpu_model') or 'unknown model'}), "
        f"{machine.get('memory_gib')} GiB RAM, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v),
        f"- load average (1/5/15 min) before {run['load_average']['before']}, after {run['load_average']['after']}",
        "",
        "Times are medians (wall clock) after a warm-up; *CPU s* is the CPU time of all threads for the "
        "same work (unaffected by other load on the machine). Each ratio is of median wall times, against "
        "the case named in *vs*, same size, same run.",
        "",
        *_md_table(HEADER, table_rows(results)),
    ]
    targets = target_rows(results)
    if targets:
        lines += ["", "## Targets", "", *_md_table(["benchmark", "target", "this run"], targets)]
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- **{name}**: {note}" for name, note in notes]
    return "\n".join(lines) + "\n"


def write(results: list[BenchmarkResult], run: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**run, "benchmarks": {r.name: asdict(r) for r in results}}
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(results, run))
    return json_path, md_path
