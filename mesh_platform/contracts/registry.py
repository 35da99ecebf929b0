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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mesh_platform.contracts.loader import ContractError, Problem, display_path, load_contract
from mesh_platform.contracts.model import Contract


def default_domains_root() -> Path:
    """``MESH_DOMAINS`` if set, else the folder of the installed ``domains`` package."""
    if os.environ.get("MESH_DOMAINS"):
        return Path(os.environ["MESH_DOMAINS"]).resolve()
    spec = importlib.util.find_spec("domains")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot find the `domains` package; set MESH_DOMAINS to the folder holding the domains")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def contract_files(domain_dir: Path) -> list[Path]:
    folder = domain_dir / "contracts"
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []


@dataclass
class ContractRegistry:
    contracts: list[Contract] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    broken: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id = {c.id: c for c in self.contracts}
        self._by_key = {(c.domain, c.name): c for c in self.contracts}

    @classmethod
    def discover(cls, root: Path | None = None) -> "ContractRegistry":
        root = Path(root) if root else default_domains_root()
        contracts: list[Contract] = []
        problems: list[Problem] = []
        broken: dict[tuple[str, str], str] = {}
        for domain_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            for path in contract_files(domain_dir):
                try:
                    contract = load_contract(path)
                except ContractError as exc:
                    problems.extend(exc.problems)
                    broken[(domain_dir.name, path.stem)] = display_path(path)
                    continue
                if contract.domain != domain_dir.name:
                    problems.append(
                        Problem(display_path(path), "domain", f"contract says domain {contract.domain!r} but lives in domain folder {domain_dir.name!r}")
                    )
                    continue
                if path.stem != contract.name:
                    problems.append(Problem(display_path(path), "name", f"contract name {contract.name!r} must match its file name {path.stem!r}"))
                    continue
                contracts.append(contract)
        seen: dict[str, Contract] = {}
        for contract in contracts:
            if contract.id in seen:
                problems.append(
                    Problem(display_path(contract.source), "id", f"id {contract.id!r} is already used by {display_path(seen[contract.id].source)}")
                )
            seen[contract.id] = contract
        return cls(contracts, problems, broken)

    def get(self, ref: str) -> Contract:
        """Find a product's contract by contract id or by ``domain/product`` (its asset key)."""
        if ref in self._by_id:
            return self._by_id[ref]
        if "/" in ref:
            domain, _, name = ref.partition("/")
            if (domain, name) in self._by_key:
                return self._by_key[(domain, name)]
        for sep in ("/", "."):
            domain, _, name = ref.partition(sep)
            if (domain, name) in self.broken:
                raise LookupError(f"the contract of {ref!r} ({self.broken[(domain, name)]}) cannot be read; fix it first")
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


@lru_cache(maxsize=8)
def _discover_cached(root: str, stamp: tuple) -> ContractRegistry:
    return ContractRegistry.discover(Path(root))


def mesh_registry(root: Path | None = None) -> ContractRegistry:
    """The registry for ``root`` (default: the mesh's domains), re-read when a contract file changes."""
    root = Path(root) if root else default_domains_root()
    stamp = tuple(
        (str(p), p.stat().st_mtime_ns) for d in sorted(root.iterdir()) if d.is_dir() for p in contract_files(d)
    )
    return _discover_cached(str(root), stamp)
