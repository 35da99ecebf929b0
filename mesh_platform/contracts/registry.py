"""Every contract in the mesh, found by convention: ``<domains root>/<domain>/contracts/*.yaml``.

A consumer domain resolves its input ports here, reading the producer's *contract* (never its
code), which is what lets each domain stay its own code location. Broken files do not stop the
registry: their problems are kept and reported by whoever needs them (``mesh validate``, or a port
that fails to resolve), so one domain's typo cannot prevent the other domains from loading.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

from mesh_platform.contracts.loader import load_contract
from mesh_platform.foundations.problems import ContractError, Problem, display_path
from mesh_platform.contracts.model import Contract


def default_domains_root() -> Path:
    """``MESH_DOMAINS`` if set, else the folder of the installed ``domains`` package."""
    return _domains_root(os.environ.get("MESH_DOMAINS") or "")


@lru_cache(maxsize=8)
def _domains_root(configured: str) -> Path:
    if configured:
        return Path(configured).resolve()
    spec = importlib.util.find_spec("domains")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot find the `domains` package; set MESH_DOMAINS to the folder holding the domains")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def contract_files(domain_dir: Path) -> list[Path]:
    folder = domain_dir / "contracts"
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []


class ContractUnreadable(LookupError):
    """A product's contract file exists but cannot be read (its problems are reported with the producer)."""

    def __init__(self, domain: str, name: str, file: str, also: str = ""):
        self.domain, self.name, self.file = domain, name, file
        super().__init__(f"the contract of {f'{domain}.{name}'!r} ({file}) cannot be read; fix it first" + (f" ({also})" if also else ""))


class MajorNotServed(LookupError):
    """A pinned major that the producer does not (or no longer) serve."""

    def __init__(self, contract_id: str, major: int, reason: str):
        self.contract_id, self.major, self.reason = contract_id, major, reason
        super().__init__(f"major version {major} of {contract_id!r} is not served: {reason}")


VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.v(?P<major>[0-9]+)$")


@dataclass
class ContractRegistry:
    """Current contracts (``<product>.yaml``) plus kept previous majors (``<product>.v<N>.yaml``)."""

    contracts: list[Contract] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    broken: dict[tuple[str, str], str] = field(default_factory=dict)
    previous: list[Contract] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_id = {c.id: c for c in self.contracts}
        self._by_key = {(c.domain, c.name): c for c in self.contracts}
        self._old: dict[str, dict[int, Contract]] = {}
        for c in self.previous:
            self._old.setdefault(c.id, {})[c.major] = c

    @classmethod
    def discover(cls, root: Path | None = None) -> "ContractRegistry":
        root = Path(root) if root else default_domains_root()
        contracts: list[Contract] = []
        previous: list[Contract] = []
        problems: list[Problem] = []
        broken: dict[tuple[str, str], str] = {}
        for domain_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            for path in contract_files(domain_dir):
                shown = display_path(path)
                versioned = VERSIONED.match(path.stem)
                stem = versioned.group("name") if versioned else path.stem
                try:
                    contract = load_contract(path)
                except ContractError as exc:
                    problems.extend(exc.problems)
                    if not versioned:
                        broken[(domain_dir.name, stem)] = shown
                    continue
                if contract.domain != domain_dir.name:
                    problems.append(Problem(shown, "domain", f"contract says domain {contract.domain!r} but lives in domain folder {domain_dir.name!r}"))
                    continue
                if stem != contract.name:
                    problems.append(Problem(shown, "name", f"contract name {contract.name!r} must match its file name {path.stem!r}"))
                    continue
                if versioned and int(versioned.group("major")) != contract.major:
                    problems.append(Problem(shown, "version", f"a file named .v{versioned.group('major')} must hold major {versioned.group('major')}, not {contract.version}"))
                    continue
                (previous if versioned else contracts).append(contract)
        seen: dict[str, Contract] = {}
        for contract in contracts:
            if contract.id in seen:
                problems.append(Problem(display_path(contract.source), "id", f"id {contract.id!r} is already used by {display_path(seen[contract.id].source)}"))
            seen[contract.id] = contract
        for old in previous:
            current = seen.get(old.id)
            if current is None:
                problems.append(Problem(display_path(old.source), "id", f"previous major of {old.id!r} has no current contract"))
            elif old.major >= current.major:
                problems.append(Problem(display_path(old.source), "version", f"a kept previous major must be below the current {current.version}"))
        return cls(contracts, problems, broken, previous)

    def get(self, ref: str, major: int | None = None, today: date | None = None) -> Contract:
        """A product's contract by contract id or ``domain/product``: the current one, or a given major.

        A previous major is served while its ``deprecationDate`` has not passed.
        """
        current = self._current(ref)
        if major is None or major == current.major:
            return current
        old = self._old.get(current.id, {}).get(major)
        reason = f"its contract is at version {current.version}"
        if old is None:
            kept = sorted(self._old.get(current.id, {}))
            also = f" (previous majors still served: {', '.join(map(str, kept))})" if kept else ""
            raise MajorNotServed(current.id, major, f"{reason}{also}; pin major {current.major}")
        if old.retired(today):
            when = f"on {old.deprecation_date}" if old.deprecation_date else "(status retired)"
            raise MajorNotServed(current.id, major, f"{reason} and major {major} was retired {when}; pin major {current.major}")
        return old

    def previous_majors(self, contract_id: str) -> list[Contract]:
        return sorted(self._old.get(contract_id, {}).values(), key=lambda c: c.major)

    def _current(self, ref: str) -> Contract:
        if ref in self._by_id:
            return self._by_id[ref]
        if "/" in ref:
            domain, _, name = ref.partition("/")
            if (domain, name) in self._by_key:
                return self._by_key[(domain, name)]
        for sep in ("/", "."):
            domain, _, name = ref.partition(sep)
            if (domain, name) in self.broken:
                raise ContractUnreadable(domain, name, self.broken[(domain, name)])
        known = sorted(self._by_id) + sorted(f"{d}/{n}" for d, n in self._by_key)
        hint = difflib.get_close_matches(ref, known, n=1)
        message = f"no data product {ref!r} in the mesh"
        if hint:
            message += f" (did you mean {hint[0]!r}?)"
        broken = sorted({p.file for p in self.problems})
        if broken:
            message += "; these contracts could not be read: " + ", ".join(broken)
        raise LookupError(message)

    def __iter__(self):
        return iter(self.contracts)

    def __len__(self) -> int:
        return len(self.contracts)


class LazyRegistry:
    """The registry a code location uses: reads only the contracts it is asked for.

    A domain's definitions need their own contracts and those of the products they consume, not
    the whole mesh's; with thousands of products, parsing every contract in every code server is
    what made loading slow. A reference that follows the convention (id ``<domain>.<product>`` or
    key ``<domain>/<product>``) is read straight from ``<root>/<domain>/contracts/<product>.yaml``;
    anything else falls back to a full discovery.
    """

    def __init__(self, root: Path):
        self.root = root
        self._full: tuple[tuple, ContractRegistry] | None = None

    @property
    def full(self) -> ContractRegistry:
        """Every contract of the mesh (re-discovered when a contract file changed)."""
        stamp = tuple(
            (str(p), p.stat().st_mtime_ns) for d in sorted(self.root.iterdir()) if d.is_dir() for p in contract_files(d)
        )
        if self._full is None or self._full[0] != stamp:
            self._full = (stamp, ContractRegistry.discover(self.root))
        return self._full[1]

    def _direct(self, ref: str) -> Contract | None:
        for sep in ("/", "."):
            domain, _, name = ref.partition(sep)
            if not name or not IDENTIFIER_RE.match(domain) or not IDENTIFIER_RE.match(name):
                continue
            path = self.root / domain / "contracts" / f"{name}.yaml"
            if not path.exists():
                continue
            try:
                contract = load_contract(path)
            except ContractError:
                raise ContractUnreadable(domain, name, display_path(path)) from None
            if (contract.domain, contract.name) == (domain, name) and ref in (contract.id, f"{domain}/{name}"):
                return contract
        return None

    def get(self, ref: str, major: int | None = None, today: date | None = None) -> Contract:
        current = self._direct(ref)
        if current is None:
            return self.full.get(ref, major, today)
        if major is None or major == current.major:
            return current
        return ContractRegistry([current], previous=self.previous_majors(current.id, current)).get(current.id, major, today)

    def previous_majors(self, contract_id: str, current: Contract | None = None) -> list[Contract]:
        current = current or self.get(contract_id)
        found = []
        for path in _versioned_files(str(self.root / current.domain / "contracts"), current.name):
            if VERSIONED.match(path.stem):
                try:
                    old = load_contract(path)
                except ContractError:
                    continue  # reported by `mesh validate`
                if old.id == current.id and old.major < current.major:
                    found.append(old)
        return sorted(found, key=lambda c: c.major)

    @property
    def problems(self) -> list[Problem]:
        return self.full.problems

    def __iter__(self):
        return iter(self.full)

    def __len__(self) -> int:
        return len(self.full)


IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _versioned_files(folder: str, name: str) -> list[Path]:
    try:
        mtime = os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        return []
    return [p for p in _folder_listing(folder, mtime) if p.name.startswith(f"{name}.v")]


@lru_cache(maxsize=256)
def _folder_listing(folder: str, _mtime: int) -> tuple[Path, ...]:
    return tuple(sorted(Path(folder).glob("*.v*.yaml")))


def mesh_registry(root: Path | None = None) -> LazyRegistry:
    """The registry for ``root`` (default: the mesh's domains); contract files are re-read when they change."""
    root = (Path(root) if root else default_domains_root()).resolve()
    return _lazy(str(root))


@lru_cache(maxsize=8)
def _lazy(root: str) -> LazyRegistry:
    return LazyRegistry(Path(root))
