"""The mesh as a whole: every domain listed in ``workspace.yaml``, loaded in this process.

``dagster dev`` loads each domain in its own code server; the ``mesh`` command line loads them
all here instead, one by one, so that one broken domain is reported without hiding the others.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import dagster as dg

from mesh_platform.foundations import safe_yaml
from mesh_platform.foundations.problems import ContractError, Problem, display_path, exception_problem
from mesh_platform.products.domain import Domain, DomainDefinitionError
from mesh_platform.storage.io_manager import mesh_key


@dataclass(frozen=True)
class LocationEntry:
    location: str
    module: str
    attribute: str | None = None
    working_directory: str | None = None


@dataclass
class LoadedDomain:
    entry: LocationEntry
    domain: Domain | None = None
    defs: dg.Definitions | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.defs is not None and not self.problems


def find_workspace(start: Path | None = None) -> Path:
    """``MESH_WORKSPACE`` or the nearest ``workspace.yaml`` from the current folder upwards."""
    if os.environ.get("MESH_WORKSPACE"):
        return Path(os.environ["MESH_WORKSPACE"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "workspace.yaml").exists():
            return folder / "workspace.yaml"
    raise FileNotFoundError("no workspace.yaml here or in any parent folder (or set MESH_WORKSPACE)")


def read_workspace(path: Path) -> list[LocationEntry]:
    shown = display_path(path)
    raw = safe_yaml.load_file(path, shown, "workspace file") or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("load_from") or [], list):
        raise ContractError([Problem(shown, "load_from", "a workspace file is a mapping with a `load_from` list")])
    entries = []
    for i, item in enumerate(raw.get("load_from") or []):
        spec = (item or {}).get("python_module") if isinstance(item or {}, dict) else None
        if spec is None:
            raise ContractError([Problem(display_path(path), f"load_from[{i}]", "only python_module entries are supported by the mesh command")])
        if isinstance(spec, str):
            spec = {"module_name": spec}
        if not isinstance(spec, dict):
            raise ContractError([Problem(shown, f"load_from[{i}].python_module", "must be a module name or a mapping")])
        module = spec.get("module_name")
        if not module:
            raise ContractError([Problem(display_path(path), f"load_from[{i}].python_module.module_name", "required field is missing")])
        entries.append(
            LocationEntry(
                location=spec.get("location_name") or module,
                module=module,
                attribute=spec.get("attribute"),
                working_directory=spec.get("working_directory"),
            )
        )
    return entries


def load_domain(entry: LocationEntry, root: Path) -> LoadedDomain:
    loaded = LoadedDomain(entry)
    where = str(root / (entry.module.replace(".", "/") + ".py"))
    workdir = str((root / entry.working_directory).resolve()) if entry.working_directory else str(root)
    if workdir not in sys.path:
        sys.path.insert(0, workdir)
    try:
        module = importlib.import_module(entry.module)
    except DomainDefinitionError as exc:
        loaded.problems = exc.problems
        return loaded
    except ContractError as exc:
        loaded.problems = exc.problems
        return loaded
    except Exception as exc:  # a domain's own bug: report it, keep loading the others
        loaded.problems = [exception_problem(exc)]
        return loaded
    loaded.domain = getattr(module, "domain", None)
    defs = getattr(module, entry.attribute or "defs", None)
    if not isinstance(defs, dg.Definitions):
        loaded.problems = [Problem(display_path(where), entry.attribute or "defs", "the module must define a dagster Definitions object `defs`")]
        return loaded
    if not isinstance(loaded.domain, Domain):
        loaded.problems = [Problem(display_path(where), "domain", "the module must define its mesh_platform Domain as `domain`")]
        return loaded
    if loaded.domain.name != entry.location:
        loaded.problems = [Problem(display_path(where), "location_name", f"code location {entry.location!r} must be named after its domain {loaded.domain.name!r}")]
        return loaded
    graph = defs.resolve_asset_graph()
    malformed = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        try:
            mesh_key(key, "declare")
        except ValueError as exc:
            malformed.append(str(exc).removeprefix("cannot declare "))
    if malformed:  # `..`, `/` or empty parts would name a lake path outside the key's domain
        loaded.problems = [Problem(display_path(where), "defs", f"asset key {m}") for m in malformed]
        return loaded
    foreign = sorted(
        k.to_user_string() for k in graph.materializable_asset_keys if k.path[0] != loaded.domain.name
    )
    if foreign:  # a location computes only its own domain's assets: its runs run as that domain
        loaded.problems = [Problem(display_path(where), "defs", f"domain {loaded.domain.name!r} defines assets of other domains: {', '.join(foreign)}")]
        return loaded
    loaded.defs = defs
    return loaded


AssetGraph = dict[dg.AssetKey, tuple[str, set[dg.AssetKey]]]
"""The mesh's asset graph: key -> (owning domain, upstream keys); see :meth:`Mesh.asset_graph`."""


def walk(start: Iterable[dg.AssetKey], edges: Callable[[dg.AssetKey], Iterable[dg.AssetKey]], through: Callable[[dg.AssetKey], bool] = lambda key: True) -> Iterator[dg.AssetKey]:
    """Every key reachable from ``start`` along ``edges`` (``start`` itself excluded), each once.

    The walk goes on past a key only where ``through(key)`` holds (the key itself is still yielded).
    The one graph walk of the platform: selections, failure propagation, catalog lineage.
    """
    seen: set[dg.AssetKey] = set()
    todo = [nxt for key in start for nxt in edges(key)]
    while todo:  # bounded: each key is expanded once
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        yield key
        if through(key):
            todo.extend(edges(key))


def parents_in(graph: AssetGraph) -> Callable[[dg.AssetKey], set[dg.AssetKey]]:
    return lambda key: graph.get(key, ("", set()))[1]


def children_in(graph: AssetGraph) -> Callable[[dg.AssetKey], set[dg.AssetKey]]:
    children: dict[dg.AssetKey, set[dg.AssetKey]] = {k: set() for k in graph}
    for key, (_, parents) in graph.items():
        for parent in parents:
            if parent in children:
                children[parent].add(key)
    return lambda key: children.get(key, set())


@dataclass
class Mesh:
    workspace: Path
    domains: list[LoadedDomain]

    @classmethod
    def load(cls, workspace: Path | None = None) -> "Mesh":
        path = workspace or find_workspace()
        return cls(path, [load_domain(e, path.parent) for e in read_workspace(path)])

    @property
    def problems(self) -> list[Problem]:
        return [p for d in self.domains for p in d.problems]

    def get(self, name: str) -> LoadedDomain:
        for d in self.domains:
            if d.entry.location == name:
                return d
        raise KeyError(name)

    def asset_graph(self) -> AssetGraph:
        """Every materializable asset of the mesh: key -> (owning domain, upstream keys)."""
        graph: dict[dg.AssetKey, tuple[str, set[dg.AssetKey]]] = {}
        for loaded in self.domains:
            if not loaded.ok:
                continue
            repo_graph = loaded.defs.resolve_asset_graph()
            for key in repo_graph.materializable_asset_keys:
                graph[key] = (loaded.entry.location, set(repo_graph.get(key).parent_keys))
        return graph
