"""Policies as code: rules every product must satisfy, evaluated automatically.

Global policies ship here; a domain adds its own in ``domains/<domain>/policies.py`` with the
:func:`policy` decorator. They are evaluated

- when a domain's definitions load (a violation fails the load of *that* domain only, naming the
  file and field to fix — the other code locations load as usual),
- by ``mesh validate`` and ``mesh policies`` (the report of every policy on every product),
- at run time the plan's results are reported by every publish (the ``governance_policies`` check
  of the quality step; :func:`check_product` only serves callers without a plan), and every read
  goes through the access decision of :mod:`mesh_platform.governance.access`.

A policy is a Python function ``(ProductUnderPolicy) -> iterable of (file, field, message)``.
Why Python rather than an embedded policy language (Rego via regopy, Cedar via cedarpy) is written
down in ``docs/governance.md``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from mesh_platform.foundations.problems import ContractError, Problem, display_path
from mesh_platform.contracts.model import Contract
from mesh_platform.governance.access import LEVELS, AccessDenied, AccessPending, access_level, authorize, clearances
from mesh_platform.contracts.registry import default_domains_root
from mesh_platform.governance.grants import grants_path, read_grants
from mesh_platform.governance.masking import SENSITIVE, treatment

KNOWN_CLASSIFICATIONS = ("public", "internal", "confidential", "pii", "restricted")


@dataclass(frozen=True)
class ProductUnderPolicy:
    """What a policy sees: one product of one domain, with its resolved input ports."""

    domain: str
    contract: Contract
    declared_in: str
    ports: dict = field(default_factory=dict)  # parameter -> ResolvedPort

    @property
    def contract_file(self) -> str:
        return display_path(self.contract.source) if self.contract.source else f"{self.contract.id}.yaml"


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    check: Callable[[ProductUnderPolicy], Iterable[tuple[str, str, str]]]
    scope: str = "global"


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    scope: str
    product: str
    passed: bool
    problems: tuple[Problem, ...] = ()


def policy(name: str, description: str = "") -> Callable:
    """Mark a function of a domain's ``policies.py`` as one of its policies."""

    def decorator(fn: Callable) -> Callable:
        fn._mesh_policy = (name, description or (fn.__doc__ or "").strip())
        return fn

    return decorator


# -- the global policies ------------------------------------------------------------------------


def _owner_and_purpose(p: ProductUnderPolicy):
    c = p.contract
    if not (c.team and c.team.name):
        yield p.contract_file, "team.name", "every product needs an owner team"
    if not c.purpose:
        yield p.contract_file, "description.purpose", "every product needs a purpose"


def _classified_columns(p: ProductUnderPolicy):
    for col in p.contract.columns:
        where = f"schema[{p.contract.table.name}].properties[{col.name}].classification"
        if not col.classification:
            yield p.contract_file, where, f"column {col.name!r} has no classification"
        elif col.classification not in KNOWN_CLASSIFICATIONS:
            yield p.contract_file, where, f"unknown classification {col.classification!r} (use {', '.join(KNOWN_CLASSIFICATIONS)})"


def _access_level(p: ProductUnderPolicy):
    try:
        access_level(p.contract)
    except ValueError:
        yield p.contract_file, "customProperties[accessLevel]", f"accessLevel must be one of {', '.join(LEVELS)}"


def _sensitive_masked(p: ProductUnderPolicy):
    """Restricted or PII columns never reach a port unmasked for consumers without clearance."""
    table = p.contract.table.name
    for col in p.contract.columns:
        if col.classification in SENSITIVE:
            try:
                treatment(col)
            except ValueError as exc:
                yield p.contract_file, f"schema[{table}].properties[{col.name}].customProperties[masking]", str(exc)
    grants_file = read_grants(default_domains_root() / p.domain)
    for i, grant in grants_file.entries if grants_file else ():
        if grant.product not in (p.contract.name, "*") or not grant.unmasked:
            continue
        try:
            held = clearances(grant.consumer)
        except ContractError:
            continue  # the consumer's domain.yaml is unreadable: it fails its own load, and holds no clearance
        missing = set(grant.unmasked) - held
        if missing:
            yield grants_path(p.domain), f"grants[{i}].unmasked", (
                f"unmasks {', '.join(sorted(missing))} for {grant.consumer!r}, which holds no such clearance in its domain.yaml"
            )


def _public_quality_and_sla(p: ProductUnderPolicy):
    c = p.contract
    if str(c.custom("accessLevel", "internal")) != "public":
        return
    has_rules = bool(c.table.quality) or any(col.quality for col in c.columns)
    if not has_rules:
        yield p.contract_file, f"schema[{c.table.name}].quality", "a public product needs quality rules"
    if c.sla("latency") is None:
        yield p.contract_file, "slaProperties", "a public product needs a latency SLA"


def _input_ports_granted(p: ProductUnderPolicy):
    """A pending grant is not a problem of the consumer's definitions (the domain loads, `mesh validate`
    lists the request and who must approve it); every read is refused until the producer approves it."""
    for param, port in p.ports.items():
        try:
            authorize(p.domain, port.contract, port.columns, aggregate=getattr(port.port, "aggregate", None) is not None)
        except AccessPending:
            continue
        except AccessDenied as exc:
            yield p.declared_in, f"{p.contract.name}.inputs[{param}]", str(exc) + _refused_grants(port.contract.domain, p.domain)


def _refused_grants(producer: str, consumer: str) -> str:
    """Why a grant the consumer may have been meant to hold is not in effect (its entry or its file is malformed)."""
    grants_file = read_grants(default_domains_root() / producer)
    refusals = grants_file.refusals_for(consumer) if grants_file else []
    if not refusals:
        return ""
    shown = "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in refusals[:3])
    if not grants_file.readable:
        return f" ({grants_file.path} cannot be read, so it grants nothing: {shown})"
    return f" (malformed grants in {grants_file.path} are not in effect: {shown})"


GLOBAL_POLICIES = [
    Policy("owner_and_purpose", "Every product has an owner team and a purpose.", _owner_and_purpose),
    Policy("columns_classified", "Every column has a known classification.", _classified_columns),
    Policy("access_level", "Every product's access level is public, internal or restricted.", _access_level),
    Policy("sensitive_columns_masked", "Restricted or PII columns never reach uncleared consumers unmasked.", _sensitive_masked),
    Policy("public_products_have_quality_and_sla", "Public products have quality rules and an SLA.", _public_quality_and_sla),
    Policy("input_ports_granted", "No input port without a valid grant.", _input_ports_granted),
]


def domain_policies(domain_root: Path) -> list[Policy]:
    """The policies a domain adds in its ``policies.py`` (a broken file raises, naming it)."""
    path = domain_root / "policies.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"mesh_policies_{domain_root.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = []
    for value in vars(module).values():
        marker = getattr(value, "_mesh_policy", None)
        if marker:
            found.append(Policy(marker[0], marker[1], value, scope=domain_root.name))
    return found


def evaluate(product: ProductUnderPolicy, policies: list[Policy]) -> list[PolicyResult]:
    results = []
    for pol in policies:
        try:
            problems = tuple(Problem(f, fld, f"[{pol.name}] {msg}") for f, fld, msg in pol.check(product))
        except Exception as exc:  # a broken policy is a failed policy, with its error
            problems = (Problem(product.contract_file, "", f"[{pol.name}] policy raised {type(exc).__name__}: {exc}"),)
        results.append(PolicyResult(pol.name, pol.scope, product.contract.id, not problems, problems))
    return results


def check_product(domain: str, contract: Contract, declared_in: str, domain_root: Path | None = None) -> list[PolicyResult]:
    """Run-time re-check before publish (ports were checked at load and are checked on every read)."""
    root = domain_root or default_domains_root() / domain
    product = ProductUnderPolicy(domain, contract, declared_in)
    policies = [p for p in GLOBAL_POLICIES if p.name != "input_ports_granted"] + domain_policies(root)
    return evaluate(product, policies)
