"""``mesh contract``: diff two versions, check the changes since a git ref against their readers, export.

``diff`` and ``check`` judge each change by the mesh's readers (:mod:`mesh_platform.mesh.consumers`,
:mod:`mesh_platform.contracts.impact`): breaking for named consumers, possibly breaking, compatible.
They exit 1 only when a named consumer breaks without a major bump (``--strict``: also on a
possibly breaking change without one). ``--format junit`` is for CI test reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

FORMATS = ("text", "json", "junit")


def _readers(old: dict[str, tuple[str, str]], workspace: Path | None, window_days: int, use_audit: bool) -> dict:
    """Each product's readers; what could not be consulted is a gap on every product.

    ``old``: contract id -> (its file relative to the domains folder, the text before the change).
    Consumers are the domains as they are now, resolved against the producers' contracts as they
    were: a consumer reading a column the change removes must still load to be named. So the mesh
    is loaded over a copy of the domains folder holding the old contracts (``MESH_DOMAINS``, from
    which every consumer resolves its ports).
    """
    import os
    import shutil
    import tempfile

    import dagster as dg

    from mesh_platform.cli.common import command_settings, prepare_dbt
    from mesh_platform.contracts.registry import default_domains_root, mesh_registry
    from mesh_platform.mesh.consumers import Readers, find_readers
    from mesh_platform.mesh.workspace import Mesh

    settings = command_settings()
    ids = set(old)
    with tempfile.TemporaryDirectory(prefix="mesh-contract-check-") as tmp:
        try:
            root = default_domains_root()
            before = Path(tmp) / "domains"
            shutil.copytree(root, before, ignore=shutil.ignore_patterns("__pycache__", "target", "logs", "*.duckdb"))
            for rel, text in old.values():
                (before / rel).parent.mkdir(parents=True, exist_ok=True)
                (before / rel).write_text(text)
            os.environ["MESH_DOMAINS"] = str(before)
            prepare_dbt(workspace)
            mesh = Mesh.load(workspace)
        except Exception as exc:  # no workspace, a broken workspace file, dbt that will not parse
            first = str(exc).splitlines()[0] if str(exc) else ""
            why = f"the mesh could not be loaded, so no reader is known ({type(exc).__name__}: {first})"
            return {i: Readers(i, gaps=[why]) for i in ids}
        instance, gap = None, None
        if use_audit:
            home = Path(settings.dagster_home)
            if (home / "dagster.yaml").exists():
                try:
                    instance = dg.DagsterInstance.from_config(str(home))
                except Exception as exc:
                    gap = f"the audit log could not be read: the Dagster instance at {home} cannot be opened ({type(exc).__name__}: {exc})"
            else:
                gap = f"the audit log was not consulted: no Dagster instance at {home}"
        else:
            gap = "the audit log was not consulted (--no-audit)"
        try:
            found = find_readers(mesh, ids, mesh_registry(), instance, window_days)
        except Exception as exc:  # whatever went wrong finding readers, it never makes a change look safe
            why = f"the readers could not be found ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            return {i: Readers(i, gaps=[why]) for i in ids}
    for readers in found.values():
        if gap:
            readers.gaps = [g for g in readers.gaps if not g.startswith("no Dagster instance was given")] + [gap]
    return found


def _emit(rows: list[tuple[str, str, object]], fmt: str, output: Path | None, summary: str) -> None:
    """``rows``: (label, status, judgement-or-message) per contract file or pair."""
    from mesh_platform.contracts.impact import Judgement, junit

    if fmt == "json":
        text = json.dumps({
            "summary": summary,
            "contracts": [
                {"file": label, "status": status, **(item.as_dict() if isinstance(item, Judgement) else {"message": item})}
                for label, status, item in rows
            ],
        }, indent=2)
    elif fmt == "junit":
        text = junit(rows)
    else:
        lines = []
        for label, status, item in rows:
            lines.append(f"{label}: {status}")
            if not isinstance(item, Judgement):
                lines.append(f"    {item}")
                continue
            for impact in item.impacts:
                lines.append(f"    {impact.change}")
                if impact.verdict == "compatible":
                    continue
                target = f" for {', '.join(sorted({r.consumer for r in impact.readers}))}" if impact.readers else ""
                lines.append(f"        {impact.verdict}{target}: {impact.reason}")
                lines += [f"          {r.describe()}" for r in impact.readers]
            if not item.impacts:
                lines.append("    no changes")
            for reader in item.must_move:
                lines.append(f"    must move: {reader.describe()}")
            lines.append(f"    {item.verdict()}")
        lines.append(summary)
        text = "\n".join(lines)
    if output is not None:
        output.write_text(text + "\n")
        click.echo(f"{summary}; wrote {output}")
    else:
        click.echo(text)


def _options(fn):
    for option in reversed([
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True),
        click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the report here instead of standard output."),
        click.option("--window-days", type=click.IntRange(min=0), default=30, show_default=True, help="How far back the audit log's reads count."),
        click.option("--no-audit", is_flag=True, help="Judge by declared ports and dbt models only."),
        click.option("--strict", is_flag=True, help="Also fail possibly breaking changes (no known reader) without a major bump."),
        click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path), default=None),
    ]):
        fn = option(fn)
    return fn


@click.group()
def contract() -> None:
    """Contract versions: diff two versions, check changes since a git ref, export as ODCS."""


@contract.command("diff")
@click.argument("old", type=click.Path(exists=True, path_type=Path))
@click.argument("new", type=click.Path(exists=True, path_type=Path))
@_options
def contract_diff(old: Path, new: Path, fmt: str, output: Path | None, window_days: int, no_audit: bool, strict: bool, workspace: Path | None) -> None:
    """Classify the changes from OLD to NEW and judge each against the product's readers.

    Exits 1 when a named consumer breaks without a major bump."""
    from mesh_platform.contracts import ContractError, load_contract
    from mesh_platform.contracts.diff import diff
    from mesh_platform.contracts.impact import judge

    try:
        report = diff(load_contract(old), load_contract(new))
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    kept = old.name if old.stem.endswith(f".v{report.old.major}") else f"{report.old.name}.yaml"
    before = {report.old.id: (f"{report.old.domain}/contracts/{kept}", old.read_text())}
    readers = _readers(before, workspace, window_days, not no_audit)[report.old.id]
    judgement = judge(report, readers.readers, readers.gaps, strict)
    status = "ok" if judgement.ok else "FAIL"
    _emit([(f"{old} -> {new}", status, judgement)], fmt, output, f"{report.old.id}: {judgement.verdict()}")
    sys.exit(0 if judgement.ok else 1)


@contract.command("check")
@click.option("--against", "ref", required=True, help="Git ref to compare with (e.g. origin/main).")
@_options
def contract_check(ref: str, fmt: str, output: Path | None, window_days: int, no_audit: bool, strict: bool, workspace: Path | None) -> None:
    """Judge every contract changed since REF against its readers (for CI).

    Exits 1 when a change breaks a named consumer (a declared input port, a dbt model, or a read in
    the audit log) without a major bump, or a version goes down."""
    from mesh_platform.contracts.impact import judge
    from mesh_platform.contracts.versioning import check_against

    try:
        checks = check_against(ref)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    before = {c.report.old.id: (c.path.split("domains/", 1)[-1], c.old_text) for c in checks if c.report is not None}
    readers = _readers(before, workspace, window_days, not no_audit) if before else {}
    rows, failed = [], 0
    for check in checks:
        if check.report is None:
            ok = check.error is None
            rows.append((check.path, "ok" if ok else "FAIL", check.error or check.note or ""))
            failed += not ok
            continue
        found = readers[check.report.old.id]
        judgement = judge(check.report, found.readers, found.gaps, strict)
        if check.note:
            judgement.gaps.append(check.note)
        ok = judgement.ok and check.error is None
        failed += not ok
        rows.append((check.path, "ok" if ok else "FAIL", judgement))
    _emit(rows, fmt, output, f"{len(checks)} contract file(s) changed since {ref}, {failed} failing")
    sys.exit(1 if failed else 0)


@contract.command("export")
@click.option("--all", "export_all", is_flag=True, help="Every contract of the mesh (current and kept previous majors).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.argument("ids", nargs=-1)
def contract_export(export_all: bool, out: Path, ids: tuple[str, ...]) -> None:
    """Write contracts as standard ODCS v3.1 YAML files, one per product major: <id>.v<major>.odcs.yaml."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.contracts.loader import dump_contract
    from mesh_platform.contracts.registry import ContractRegistry

    command_settings()
    registry = ContractRegistry.discover()
    if not export_all and not ids:
        raise click.UsageError("name contract ids to export, or --all")
    chosen = list(registry) + registry.previous if export_all else [registry.get(i) for i in ids]
    out.mkdir(parents=True, exist_ok=True)
    for c in chosen:
        (out / f"{c.id}.v{c.major}.odcs.yaml").write_text(dump_contract(c))
    click.echo(f"exported {len(chosen)} contract(s) to {out}")
    for problem in registry.problems:
        click.echo(f"warning: not exported: {problem}", err=True)
