"""`mesh validate`: every contract parses, every domain loads, every input port resolves, every grant holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mesh_platform.contracts.loader import load_contract
from mesh_platform.foundations.problems import ContractError, Problem
from mesh_platform.contracts.registry import ContractRegistry, default_domains_root
from mesh_platform.governance.access import owners
from mesh_platform.governance.grants import grant_problems, pending_grants
from mesh_platform.mesh.workspace import Mesh


def input_ports(domain) -> set[tuple[str, str]]:
    """The (consumer domain, product) input ports of a loaded domain: products, private intermediates and dbt models."""
    return {(domain.name, port.product) for ports in domain.input_ports.values() for port in ports}


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


@dataclass
class DomainReport:
    """What loading one domain found (in this process, or in a process of its own)."""

    location: str
    ok: bool = False
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    products: int = 0
    input_ports: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "problems": [p.__dict__ for p in self.problems]}

    @classmethod
    def from_dict(cls, data: dict) -> "DomainReport":
        return cls(**{**data, "problems": [Problem(**p) for p in data["problems"]]})


def _report(loaded) -> DomainReport:
    report = DomainReport(loaded.entry.location, loaded.ok, list(loaded.problems))
    if loaded.ok:
        report.warnings = list(loaded.domain.last_plan.warnings if loaded.domain.last_plan else [])
        report.products = len(loaded.domain.product_names)
        report.input_ports = len(input_ports(loaded.domain))
    return report


LOAD_TIMEOUT = 300.0  # seconds for one domain's load in its own process


def _load_here(workspace: str, location: str) -> dict:
    """One domain's load in this (forked) process, as a dict; its warnings are in the dict, so they
    are not logged here too (the command prints them once)."""
    import logging

    from mesh_platform.mesh.workspace import load_domain, read_workspace
    from mesh_platform.products.domain import LOAD_WARNING

    logging.getLogger("mesh_platform").addFilter(lambda record: not getattr(record, LOAD_WARNING, False))
    path = Path(workspace)
    entry = next(e for e in read_workspace(path) if e.location == location)
    try:
        return _report(load_domain(entry, path.parent)).as_dict()
    except BaseException as exc:  # noqa: BLE001 - a domain that exits or raises past the loader fails alone
        return DomainReport(location, problems=[Problem(path.name, location, f"its load ended: {type(exc).__name__}: {exc}")]).as_dict()


def _load_forked(workspace: Path, locations: list[str], workers: int) -> list[DomainReport]:
    """Each domain loaded in a child forked from this process, which has imported Dagster and the
    platform but no domain yet: the domain's module runs in its child and dies with it, at nearly
    in-process speed. A child that exits, crashes or hangs fails its domain alone."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    results: dict[str, DomainReport] = {}
    pending = list(locations)
    running: dict[str, tuple] = {}

    def finish(location: str, process, reader, data: dict | None) -> None:
        reader.close()
        process.join(timeout=5)
        if data is None:
            why = f"its load ended with exit code {process.exitcode}" if process.exitcode is not None else f"loading took more than {LOAD_TIMEOUT:.0f} s"
            data = DomainReport(location, problems=[Problem(workspace.name, location, why)]).as_dict()
        results[location] = DomainReport.from_dict(data)

    while pending or running:
        while pending and len(running) < workers:
            location = pending.pop(0)
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(str(workspace), location, writer), daemon=True)
            process.start()
            writer.close()
            running[location] = (process, reader, time.monotonic())
        for location, (process, reader, started) in list(running.items()):
            if reader.poll():  # read before joining: a large report would block the child's send
                try:
                    data = reader.recv()
                except EOFError:  # it died before sending anything
                    data = None
                finish(location, process, reader, data)
            elif not process.is_alive():
                finish(location, process, reader, None)
            elif time.monotonic() - started > LOAD_TIMEOUT:
                process.kill()
                finish(location, process, reader, None)
            else:
                continue
            del running[location]
        time.sleep(0.02)
    return [results[loc] for loc in locations]


def _child(workspace: str, location: str, writer) -> None:
    writer.send(_load_here(workspace, location))
    writer.close()


def _load_apart(workspace: Path, location: str) -> DomainReport:
    """Load one domain in a fresh process: its module runs there and nowhere else."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mesh_platform.mesh.validation", "--workspace", str(workspace), "--location", location]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LOAD_TIMEOUT, cwd=workspace.parent)
    except subprocess.TimeoutExpired:
        return DomainReport(location, problems=[Problem(str(workspace.name), location, f"loading took more than {LOAD_TIMEOUT:.0f} s")])
    try:
        return DomainReport.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError, TypeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return DomainReport(location, problems=[Problem(str(workspace.name), location, f"its load ended with code {done.returncode}: {' | '.join(tail)}")])


def validate_mesh(workspace: Path | None = None, apart: bool = False) -> ValidationReport:
    """Every contract, every domain, every grant. ``apart``: each domain is loaded in a process of its
    own (``mesh validate``), so no domain's module can change what another's load finds (its
    environment, the platform's functions, the mesh's settings); otherwise all load here, in turn."""
    from concurrent.futures import ThreadPoolExecutor

    from mesh_platform.mesh.workspace import find_workspace, read_workspace

    report = ValidationReport()
    registry = ContractRegistry.discover(default_domains_root())
    report.contracts = len(registry)
    problems = list(registry.problems)
    path = (workspace or find_workspace()).resolve()
    if apart:
        locations = [e.location for e in read_workspace(path)]
        workers = max(1, min(len(locations), os.cpu_count() or 1))
        if hasattr(os, "fork"):
            domains = _load_forked(path, locations, workers)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                domains = list(pool.map(lambda loc: _load_apart(path, loc), locations))
    else:
        domains = [_report(loaded) for loaded in Mesh.load(path).domains]
    for found in domains:
        problems.extend(found.problems)
        if found.ok:
            report.warnings.extend(found.warnings)
            report.domains += 1
            report.products += found.products
            report.input_ports += found.input_ports
    names = [d.location for d in domains]
    for found in grant_problems(names).values():
        problems.extend(found)
    for p in pending_grants(names):
        who = ", ".join(owners(p.producer)) or "the owners of " + p.producer
        report.pending.append(
            f"{p.path}: grants[{p.index}]: {p.grant.consumer!r} asks to read {p.producer}.{p.grant.product} "
            f"({p.grant.purpose}); pending until {who} approve it (`mesh grants approve {p.producer} {p.grant.consumer}`)"
        )
    seen: set[Problem] = set()
    report.problems = [p for p in problems if not (p in seen or seen.add(p))]
    return report


def main(argv: list[str] | None = None) -> None:
    """One domain's load, as JSON on the last line (what :func:`validate_mesh` runs apart)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m mesh_platform.mesh.validation")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--location", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(_load_here(str(args.workspace), args.location)))


if __name__ == "__main__":
    main()
