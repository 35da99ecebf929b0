"""What is wrong with a file the platform reads: :class:`Problem` (file, field, message), the error
carrying them, and how a file is named in a message (:func:`display_path`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (a field path such as ``schema[claims].properties[amount]``) and what."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class ContractError(ValueError):
    """A contract (or other mesh file) that cannot be used; lists every problem found, each naming file and field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def display_path(path: str | os.PathLike) -> str:
    """A path relative to the current folder when it is below it, else absolute."""
    return _display(os.fspath(path), os.getcwd())


@lru_cache(maxsize=4096)
def _display(path: str, cwd: str) -> str:
    p = os.path.realpath(path)
    rel = os.path.relpath(p, cwd)
    return p if rel.startswith("..") else rel


def exception_problem(exc: BaseException, prefix: str = "") -> Problem:
    """A Problem pointing at where ``exc`` was raised in user code (or the bad line of a SyntaxError)."""
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        file, line = exc.filename, exc.lineno
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
        frame = frames[-1] if frames else None
        file, line = (frame.filename, frame.lineno) if frame else ("<unknown>", 0)
    return Problem(display_path(file), f"line {line}", f"{prefix}{type(exc).__name__}: {exc}")
