"""`mesh validate`: every contract parses, every domain loads, every input port resolves, every grant holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mesh_platform.contracts.loader import load_contract
from mesh_platform.problems import ContractError, Problem
from mesh_platform.contracts.registry import ContractRegistry, default_domains_root
from mesh_platform.governance.access import owners
from mesh_platform.governance.grants import grant_problems, pending_grants
from mesh_platform.workspace import Mesh


def input_ports(domain) -> set[tuple[str, str]]:
    """The (consumer domain, product) input ports of a loaded domain, Python and dbt."""
    return {(domain.name, port.product) for _, ports in domain.products.values() for port in ports}


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    domains: int = 0
    products: int = 0
    input_ports: int = 0
    contracts: int = 0
    pending: list[str] = field(default_factory=list)  # grant requests awaiting their producer's approval (not problems)
    warnings: list[str] = field(default_factory=list)  # loaded, but not as declared (see DomainPlan.warnings)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_files(paths: list[Path]) -> ValidationReport:
    report = ValidationReport()
    for path in paths:
        try:
            load_contract(path)
            report.contracts += 1
        except ContractError as exc:
            report.problems.extend(exc.problems)
    return report


def validate_mesh(workspace: Path | None = None) -> ValidationReport:
    report = ValidationReport()
    registry = ContractRegistry.discover(default_domains_root())
    report.contracts = len(registry)
    problems = list(registry.problems)
    mesh = Mesh.load(workspace)
    for loaded in mesh.domains:
        problems.extend(loaded.problems)
        if loaded.ok:
            report.warnings.extend(loaded.domain.last_plan.warnings if loaded.domain.last_plan else [])
            report.domains += 1
            report.products += len(loaded.domain.product_names)
            report.input_ports += len(input_ports(loaded.domain))
    for found in grant_problems([d.entry.location for d in mesh.domains]).values():
        problems.extend(found)
    for p in pending_grants([d.entry.location for d in mesh.domains]):
        who = ", ".join(owners(p.producer)) or "the owners of " + p.producer
        report.pending.append(
            f"{p.path}: grants[{p.index}]: {p.grant.consumer!r} asks to read {p.producer}.{p.grant.product} "
            f"({p.grant.purpose}); pending until {who} approve it (`mesh grants approve {p.producer} {p.grant.consumer}`)"
        )
    seen: set[Problem] = set()
    report.problems = [p for p in problems if not (p in seen or seen.add(p))]
    return report
