"""A scaffolding command's changes: checked in full before anything is written, then written together.

If a write fails, the files written so far are removed and the edited ones restored, so a command
leaves the project as it was or changed as a whole.
"""

from __future__ import annotations

import keyword
import os
from dataclasses import dataclass, field
from pathlib import Path

from mesh_platform.contracts.model import IDENTIFIER
from mesh_platform.foundations.problems import display_path

KINDS = ("source-aligned", "consumer-aligned", "aggregate")


class ScaffoldError(ValueError):
    """Bad input to a scaffolding command; nothing was written."""


@dataclass
class Changes:
    """Files to create and files to replace, applied together (or not at all)."""

    root: Path
    create: dict[Path, str] = field(default_factory=dict)
    replace: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def apply(self) -> list[Path]:
        created: list[Path] = []
        made_dirs: list[Path] = []
        originals: dict[Path, str] = {}
        try:
            for path, text in self.create.items():
                for parent in reversed(path.parents):
                    if not parent.exists():
                        parent.mkdir()
                        made_dirs.append(parent)
                write_all(path, text, exclusive=True)
                created.append(path)
            for path, text in self.replace.items():
                originals[path] = path.read_text(encoding="utf-8")
                write_all(path, text)
        except BaseException:
            for path, text in originals.items():
                write_all(path, text)
            for path in created:
                path.unlink(missing_ok=True)
            for folder in reversed(made_dirs):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        return [*created, *self.replace]


def write_all(path: Path, text: str, exclusive: bool = False) -> None:
    if exclusive:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_identifier(kind: str, name: str) -> None:
    if not IDENTIFIER.match(name or "") or keyword.iskeyword(name):
        raise ScaffoldError(f"{kind} name {name!r} is not an identifier: use snake_case (lower-case letters, digits, _; starting with a letter)")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScaffoldError(f"{display_path(path)}: cannot be read: {exc}") from None
