"""What is wrong with a file the platform reads: :class:`Problem` (file, field, message) and the error carrying them."""

from __future__ import annotations

from dataclasses import dataclass


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
