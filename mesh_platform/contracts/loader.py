"""Read contract YAML files into :class:`Contract` models, with errors that name file and field."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mesh_platform.contracts.model import Contract, platform_problems

try:  # the C loader is several times faster; fall back where libyaml is missing
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _BaseLoader = yaml.SafeLoader


class _ContractLoader(_BaseLoader):
    """Safe YAML without timestamp resolution: ODCS dates are strings, as in the JSON schema."""


_ContractLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (a field path such as ``schema[claims].properties[amount]``) and what."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class ContractError(ValueError):
    """A contract file that cannot be used; lists every problem found, each naming file and field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def display_path(path: str | os.PathLike) -> str:
    """A path relative to the current folder when it is below it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


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


def _field_path(loc: tuple, raw: Any) -> str:
    """Turn a pydantic error location into a readable ODCS path, naming list items by their name."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            label = str(item)
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name") or node.get("property"), str):
                    label = node.get("name") or node.get("property")
            else:
                node = None
            if parts:
                parts[-1] += f"[{label}]"
            else:
                parts.append(f"[{label}]")
        else:
            key = str(item)
            parts.append(key)
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def _message(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field (not part of ODCS v3.1; platform settings go under customProperties)"
    if err["type"] == "missing":
        return "required field is missing"
    if "input" in err and err["type"] in ("literal_error", "string_type", "bool_type", "int_type", "float_type"):
        return f"{msg} (got {err['input']!r})"
    return msg.removeprefix("Value error, ")


def parse_contract(raw: Any, file: str) -> Contract:
    """Validate already-loaded YAML data; raises :class:`ContractError`."""
    if not isinstance(raw, dict):
        raise ContractError([Problem(file, "", "a contract must be a YAML mapping at the top level")])
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        problems = [Problem(file, _field_path(e["loc"], raw), _message(e)) for e in exc.errors()]
        raise ContractError(problems) from None
    problems = [Problem(file, field, message) for field, message in platform_problems(contract)]
    if problems:
        raise ContractError(problems)
    return contract


_cache: dict[tuple[str, int, int], Contract] = {}


def load_contract(path: str | os.PathLike) -> Contract:
    """Parse one contract file (cached on path, size and modification time)."""
    path = Path(path)
    shown = display_path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ContractError([Problem(shown, "", "contract file not found")]) from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _cache:
        return _cache[key]
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ContractLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ContractError([Problem(shown, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    contract = parse_contract(raw, shown)
    contract._source = path.resolve()
    _cache[key] = contract
    return contract


def load_yaml_text(text: str) -> Any:
    """YAML as ODCS reads it (dates stay strings)."""
    return yaml.load(text, Loader=_ContractLoader)


def load_yaml(path: str | os.PathLike) -> Any:
    return load_yaml_text(Path(path).read_text(encoding="utf-8"))


def dump_contract(contract: Contract) -> str:
    """The contract as ODCS v3.1 YAML (defaults and empty fields left out)."""
    data = contract.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    data.pop("apiVersion")
    data = {"apiVersion": "v3.1.0", "kind": data.pop("kind"), **data}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
