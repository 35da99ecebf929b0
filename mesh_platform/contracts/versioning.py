"""Contract versions over git: which contracts changed since a ref, and is each bump right."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mesh_platform.contracts.diff import MAJOR, Change, DiffReport, diff
from mesh_platform.contracts.loader import ContractError, load_contract, load_yaml_text, parse_contract
from mesh_platform.contracts.registry import VERSIONED


@dataclass
class FileCheck:
    path: str
    report: DiffReport | None = None
    error: str | None = None
    note: str | None = None
    old_text: str | None = None  # the file at the ref

    @property
    def ok(self) -> bool:
        return self.error is None and (self.report is None or self.report.ok)


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def changed_contracts(root: Path, ref: str) -> list[str]:
    """Contract files added, changed or deleted since ``ref`` (committed, staged, unstaged or untracked)."""
    tracked = _git(root, "diff", "--name-only", ref, "--", "domains").split()
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", "domains").split()
    return sorted({p for p in tracked + untracked if "/contracts/" in p and p.endswith((".yaml", ".yml"))})


def check_against(ref: str, root: Path | None = None) -> list[FileCheck]:
    root = Path(_git(root or Path.cwd(), "rev-parse", "--show-toplevel").strip())
    _git(root, "rev-parse", "--verify", f"{ref}^{{commit}}")
    checks = []
    for rel in changed_contracts(root, ref):
        check = FileCheck(rel)
        path = root / rel
        try:
            old_text = check.old_text = _git(root, "show", f"{ref}:{rel}")
        except RuntimeError:
            old_text = None
        try:
            new = load_contract(path) if path.exists() else None
            old = parse_contract(load_yaml_text(old_text, f"{ref}:{rel}"), f"{ref}:{rel}") if old_text is not None else None
        except ContractError as exc:
            check.error = str(exc)
            checks.append(check)
            continue
        if old is None:
            check.note = f"new contract {new.id} {new.version}"
        elif new is None:
            if VERSIONED.match(Path(rel).stem) and old.retired():
                check.note = f"retired major {old.major} of {old.id} removed"
            else:
                # judged like any product-wide breaking change: it fails when the product has readers
                check.report = DiffReport(old, old, [Change(MAJOR, "file", "contract deleted")])
                check.note = f"{old.id} {old.version} was deleted: keep it until consumers move, or retire it with a deprecationDate"
        else:
            check.report = diff(old, new)
        checks.append(check)
    return checks
