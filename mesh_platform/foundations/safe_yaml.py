"""Read YAML files that another team wrote: every YAML file of the mesh goes through here.

Contracts, grants, domain descriptors and ``workspace.yaml`` are written by teams that may be
careless or hostile, and the platform reads them in every code location, so one bad file must be
refused quickly, with a message naming it, and never hang or exhaust a process. What is refused,
each as a :class:`~mesh_platform.foundations.problems.ContractError` naming the file:

- a path that is not a regular file (a directory, a pipe, a device) or cannot be opened;
- a file larger than :data:`MAX_BYTES` (checked before reading, and the read itself is capped);
- bytes that are not UTF-8 (the field names the byte offset and line of the first bad byte);
- text that is not YAML, or holds more than one document, or a value that cannot be built
  (``!!int abc``, an integer of thousands of digits, an unhashable key);
- aliases that expand without bound (the "billion laughs": ten anchors, each ten aliases of the
  previous one, expand to 10^10 nodes). PyYAML builds such a document cheaply because aliases
  share objects, but everything that walks it afterwards (validation, hashing, JSON) would expand
  it. The document is composed to its node graph first and its expanded size counted, each shared
  node once (memoized); when aliases add more than :data:`MAX_ALIAS_NODES` nodes, or an alias
  refers to a node that contains it, the file is refused before any Python object is built.
  Without an anchor (``&``) in the text there can be no alias, so that count is skipped.

Deep nesting is bounded by libyaml itself (a scanner error); the pure-Python fallback's
``RecursionError`` is reported the same way. PyYAML offers none of the other limits and no
maintained library adds them to it (strictyaml refuses anchors outright and is far slower), so
they live here.

Dates stay strings (``expires: 2027-06-30`` reads as ``"2027-06-30"``), as ODCS's JSON schema has
them; the models parse them.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from mesh_platform.foundations.problems import ContractError, Problem

MAX_BYTES = 1 << 20
"""Largest YAML file read (1 MiB); contracts are a few KiB."""

MAX_ALIAS_NODES = 100_000
"""How many nodes aliases may add to a document once expanded."""

try:  # the C loader is several times faster; fall back where libyaml is missing
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _BaseLoader = yaml.SafeLoader


class MeshLoader(_BaseLoader):
    """Safe YAML without timestamp resolution: ODCS dates are strings, as in the JSON schema."""


MeshLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def _refuse(file: str, message: str, field: str = "") -> ContractError:
    return ContractError([Problem(file, field, message)])


def read_bytes(path: str | os.PathLike, shown: str, what: str = "file") -> bytes:
    """The bytes of a regular file of at most :data:`MAX_BYTES`; ``shown`` names it in messages."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _refuse(shown, f"{what} not found") from None
    except OSError as exc:
        raise _refuse(shown, f"{what} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(shown, f"is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(shown, f"is not a regular file (a pipe, socket or device cannot be a {what})")
    if info.st_size > MAX_BYTES:
        raise _refuse(shown, f"is {info.st_size:,} bytes; a {what} may be at most {MAX_BYTES:,} bytes")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _refuse(shown, f"{what} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:  # grew since the stat
        raise _refuse(shown, f"is larger than {MAX_BYTES:,} bytes, the most a {what} may be")
    return data


def decode(data: bytes, shown: str) -> str:
    """UTF-8 text, or a problem naming the byte offset (and line) of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _refuse(
            shown,
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} ({exc.reason}); save the file as UTF-8",
            f"line {line}, byte {exc.start}",
        ) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(distinct nodes, nodes once every alias is expanded) of a composed document.

    Iterative and memoized on node identity, so it costs one visit per distinct node however far
    the aliases expand. Raises ``ValueError`` when an alias refers to a node that contains it.
    """
    cap = 1 << 62  # sizes saturate instead of growing into huge integers
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(cap, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                mark = child.start_mark
                raise ValueError(f"line {mark.line + 1}, column {mark.column + 1}")
            if id(child) not in sizes:
                stack.append((child, False))
    return len(sizes), sizes[id(root)]


def parse(text: str, shown: str) -> Any:
    """One YAML document, read as the mesh reads YAML (dates stay strings), within the limits above."""
    if len(text) > MAX_BYTES:
        raise _refuse(shown, f"is larger than {MAX_BYTES:,} bytes, the most a YAML file may be")
    loader = MeshLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "&" in text:  # only anchored nodes can be aliased
            try:
                distinct, expanded = expanded_size(node)
            except ValueError as exc:
                raise _refuse(shown, "an alias refers to the node it is anchored on (a recursive structure)", str(exc)) from None
            if expanded - distinct > MAX_ALIAS_NODES:
                raise _refuse(
                    shown,
                    f"aliases expand the document to {_count(expanded)} nodes from {distinct:,} written "
                    f"(at most {MAX_ALIAS_NODES:,} more are allowed): refused as an alias bomb",
                )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _refuse(shown, f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where) from None
    except RecursionError:
        raise _refuse(shown, "not valid YAML: nested too deeply") from None
    except ContractError:
        raise
    except Exception as exc:  # a value PyYAML cannot build: `!!int abc`, an int of 10,000 digits, ...
        raise _refuse(shown, f"not valid YAML: {type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()


def _count(n: int) -> str:
    return "more than 10^18" if n >= 1 << 62 else f"{n:,}"


def load_file(path: str | os.PathLike, shown: str, what: str = "file") -> Any:
    """Read and parse one YAML file with every check above; ``shown`` names it in messages."""
    return parse(decode(read_bytes(path, shown, what), shown), shown)
