"""One resolved plan per product, built when definitions load and carried to run time.

:func:`plan_domain` is a pure function of a domain's declarations, its files (descriptor, contracts,
private contracts, ``policies.py``, dbt project) and the mesh's contract registry. For every asset it
resolves, once:

- the **contract** (a product's port contract, or a private intermediate's own contract),
- the **input ports** (each against the producer's contract: product, major, columns, aggregate),
- the **policies**, evaluated here and nowhere else (the publish step reports these results),
- the **spec**: tags, metadata, description, owners, freshness and automation
  (:mod:`mesh_platform.products.specs`); the checks follow from the contract (:func:`mesh_platform.quality.checks.check_specs`).

The plan is handed to the product's compute step and, through the audited table it returns, to the
IO manager, so nothing is parsed or looked up again on the publish path; registry look-ups remain
for reads of other domains' ports. Every problem found is collected into :attr:`DomainPlan.problems`,
each naming its file and field; a plan with problems builds no definitions.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import dagster as dg

from mesh_platform.lineage import columns as column_lineage
from mesh_platform.products import partitions, private
from mesh_platform.contracts.loader import load_contract
from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import VERSIONED, ContractRegistry, contract_files
from mesh_platform.products.declarations import Declaration
from mesh_platform.governance.policies import GLOBAL_POLICIES, Policy, PolicyResult, ProductUnderPolicy, domain_policies
from mesh_platform.governance.policies import evaluate as evaluate_policies
from mesh_platform.products.automation import catch_up_pairs
from mesh_platform.products.ports import InputPort, ResolvedPort, resolve
from mesh_platform.foundations.problems import ContractError, Problem, display_path, exception_problem
from mesh_platform.governance.quotas import BUILT_IN_DEFAULTS, MeshQuotas, Quotas, load_mesh_quotas
from mesh_platform.governance.quotas import resolve as resolve_quotas
from mesh_platform.products.specs import Spec, intermediate_spec, product_spec

if TYPE_CHECKING:
    from mesh_platform.dbt.plan import DbtPlan

# ``Domain`` (mesh_platform.products.domain) is annotated by name only: the domain calls this module, never
# the other way round.


@dataclass(frozen=True)
class ProductPlan:
    """Everything resolved about one asset of a domain: what it is, reads, must satisfy and shows."""

    domain: str
    declaration: Declaration
    contract: Contract | None  # the port contract of a product; None for a private intermediate
    private_contract: Contract | None
    ports: Mapping[str, ResolvedPort]  # parameter -> input port
    policies: tuple[PolicyResult, ...]  # evaluated at load; reported by every publish
    spec: Spec
    quotas: Quotas | None = None
    column_lineage: dg.TableColumnLineage | None = None  # from the contract's transformSourceObjects
    previous_majors: tuple[int, ...] = ()  # the previous majors still served, as ``<name>_v<major>``

    def previous_major_keys(self) -> dict[int, dg.AssetKey]:
        return {major: dg.AssetKey([self.domain, f"{self.name}_v{major}"]) for major in self.previous_majors}

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([self.domain, self.name])

    @property
    def is_product(self) -> bool:
        return self.contract is not None

    @property
    def partitioning(self):
        """The daily partitions its contract (or private contract) declares, or None."""
        from mesh_platform.products import partitions

        return partitions.of(self.contract if self.contract is not None else self.private_contract)


@dataclass
class DomainPlan:
    domain: str
    products: list[ProductPlan] = field(default_factory=list)
    externals: dict[dg.AssetKey, dg.AssetSpec] = field(default_factory=dict)
    dbt: "DbtPlan | None" = None
    policies: list[Policy] = field(default_factory=list)
    policy_results: list[PolicyResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    quotas: Quotas | None = None
    warnings: list[str] = field(default_factory=list)  # loaded, but not as declared (a producer's contract from the lake)

    @property
    def ports_by_product(self) -> dict[str, tuple[Contract, list[InputPort]]]:
        """Each published product (Python or dbt, current major) with the input ports it reads."""
        out = {p.name: (p.contract, [r.port for r in p.ports.values()]) for p in self.products if p.is_product and not p.declaration.is_shim}
        if self.dbt is not None:
            out.update(self.dbt.ports_by_product)
        return out

    @property
    def ports_by_asset(self) -> dict[str, list[InputPort]]:
        """Every asset's input ports, private intermediates included (fraud's model reads claims'
        events): what storage must let the domain read and whom a producer's change reaches."""
        out = {p.name: [r.port for r in p.ports.values()] for p in self.products if not p.declaration.is_shim}
        if self.dbt is not None:
            out.update({name: ports for name, (_, ports) in self.dbt.ports_by_product.items()})
        return out


def _projection(columns: list[str]) -> Callable:
    def project(current):
        return current[columns]

    return project


def _where(domain: "Domain", decl: Declaration) -> str:
    return display_path(decl.declared_in or domain.root / "definitions.py")


def product_contract(domain: "Domain", name: str, problems: list[Problem]) -> Contract | None:
    """``contracts/<name>.yaml`` of ``domain``, checked to belong to it and to publish a table."""
    path = domain.contract_path(name)
    try:
        contract = load_contract(path)
    except ContractError as exc:
        problems.extend(exc.problems)
        return None
    shown = display_path(path)
    if contract.domain != domain.name:
        problems.append(Problem(shown, "domain", f"says {contract.domain!r}, but the contract belongs to domain {domain.name!r}"))
        return None
    if contract.name != name:
        problems.append(Problem(shown, "name", f"says {contract.name!r}, but the product is declared as {name!r}"))
        return None
    if private.shape(contract) == private.OBJECT:
        problems.append(Problem(shown, f"schema[{contract.table.name}].physicalType", "a data product publishes a table; an object can only be kept privately (contracts/private/)"))
        return None
    return contract


def _orphan_contracts(domain: "Domain", declared: set[str], problems: list[Problem]) -> None:
    for path in contract_files(domain.root):
        if path.stem in declared or VERSIONED.match(path.stem):
            continue
        try:
            contract = load_contract(path)
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        if contract.status not in ("draft", "proposed"):
            problems.append(Problem(display_path(path), "name", f"contract {contract.id!r} is {contract.status} but no product {path.stem!r} is declared in this domain"))
    private_declared = {d.name for d in domain.declarations.values() if not d.is_product}
    for path in private.contract_files(domain.root):
        if path.stem not in private_declared:
            problems.append(Problem(display_path(path), "name", f"a private contract, but no private asset {path.stem!r} is declared in this domain"))


def _resolve_inputs(domain: "Domain", decl: Declaration, registry: ContractRegistry, plan: DomainPlan) -> dict[str, ResolvedPort] | None:
    """The declaration's input ports, resolved; None when one of them could not be."""
    ports: dict[str, ResolvedPort] = {}
    complete = True
    signature = inspect.signature(decl.fn).parameters
    for param, source in decl.inputs.items():
        where = f"{decl.name}.inputs[{param}]"
        if param not in signature and not any(p.kind is p.VAR_KEYWORD for p in signature.values()):
            plan.problems.append(Problem(_where(domain, decl), where, f"the transform has no parameter {param!r}"))
            complete = False
            continue
        if isinstance(source, InputPort):
            try:
                ports[param] = resolve(source, registry, domain.name)
            except (LookupError, ValueError) as exc:
                plan.problems.append(Problem(_where(domain, decl), where, str(exc).strip("'\"")))
                complete = False
                continue
            plan.externals.setdefault(ports[param].key, ports[param].external_spec())
            if (warning := ports[param].deprecation(f"{domain.name}: {where}")) is not None:
                plan.warnings.append(warning)
        elif isinstance(source, str):
            if source not in domain.declarations:
                plan.problems.append(Problem(_where(domain, decl), where, f"no asset {source!r} in domain {domain.name!r} (declared: {', '.join(domain.declarations)})"))
        else:
            plan.problems.append(Problem(_where(domain, decl), where, f"expected an InputPort or an asset name, got {source!r}"))
    return ports if complete else None


def _previous_majors(domain: "Domain", decl: Declaration, contract: Contract, registry: ContractRegistry, owners: list[str], plan: DomainPlan) -> list[int]:
    """One shim per previous major still served: ``<product>_v<major>``, derived from the current
    product; returns the majors served."""
    served: list[int] = []
    for old in registry.previous_majors(contract.id):
        if old.retired():
            continue
        fn = domain.downgrades.get((decl.name, old.major))
        if fn is None:
            missing = [c for c in old.column_names if c not in contract.column_names]
            if missing:
                plan.problems.append(Problem(
                    display_path(old.source), "schema",
                    f"major {old.major} needs columns the current major no longer has ({', '.join(missing)}); "
                    f"declare @domain.downgrade({decl.name!r}, major={old.major}) in {_where(domain, decl)}",
                ))
                continue
            fn = _projection(old.column_names)
        shim = Declaration(name=f"{decl.name}_v{old.major}", fn=fn, inputs={"current": decl.name}, is_product=True, declared_in=decl.declared_in, is_shim=True)
        # checked like any publish (the shim has no input ports), reported by its publish step
        results = tuple(evaluate_policies(ProductUnderPolicy(domain.name, old, _where(domain, decl), {}), plan.policies))
        plan.products.append(ProductPlan(domain.name, shim, old, None, {}, results, product_spec(domain.name, old, owners, None, has_inputs=True), plan.quotas))
        served.append(old.major)
    return served


def _grants_over_ceiling(domain_root: Path, mesh_quotas: MeshQuotas) -> list[Problem]:
    """A producer cannot give one consumer more privacy budget than the mesh lets any domain spend."""
    from mesh_platform.governance.grants import read_grants

    ceiling = mesh_quotas.ceilings.get("privacy_epsilon")
    grants_file = read_grants(domain_root) if ceiling is not None else None
    return [
        Problem(grants_file.path, f"grants[{i}].privacy.epsilon",
                f"{grant.privacy.epsilon:g} is above the mesh ceiling privacy_epsilon {ceiling:g} ({mesh_quotas.source})")
        for i, grant in (grants_file.entries if grants_file else ())
        if grant.privacy is not None and grant.privacy.epsilon > ceiling
    ]


def plan_domain(domain: "Domain", registry: ContractRegistry) -> DomainPlan:
    """The resolved plan of every asset ``domain`` declares (pure: builds no Dagster definitions)."""
    plan = DomainPlan(domain.name)
    owners = list(domain.descriptor.owners)
    try:
        mesh_quotas = load_mesh_quotas(domain.root.parent)
    except ContractError as exc:
        plan.problems.extend(exc.problems)
        mesh_quotas = MeshQuotas(dict(BUILT_IN_DEFAULTS), {})
    plan.quotas, quota_problems = resolve_quotas(domain.name, domain.descriptor.quotas, display_path(domain.root / "domain.yaml"), mesh_quotas)
    plan.problems.extend(quota_problems)
    plan.problems.extend(_grants_over_ceiling(domain.root, mesh_quotas))
    try:
        plan.policies = GLOBAL_POLICIES + domain_policies(domain.root)
    except Exception as exc:  # the domain's own policies.py is broken
        plan.problems.append(exception_problem(exc, "policies cannot load: "))
        plan.policies = list(GLOBAL_POLICIES)
    policy_names = [p.name for p in plan.policies]

    dbt_models: set[str] = set()
    if domain.dbt_project is not None:
        from mesh_platform.dbt.plan import plan_dbt

        plan.dbt = plan_dbt(domain, registry, owners, plan, product_contract)
        dbt_models = plan.dbt.models if plan.dbt is not None else {p.stem for p in contract_files(domain.root)}

    _orphan_contracts(domain, {d.name for d in domain.declarations.values() if d.is_product} | dbt_models, plan.problems)

    contracts: dict[str, tuple[Contract | None, Contract | None]] = {}
    for decl in domain.declarations.values():
        contract = private_contract = None
        if decl.is_product:
            contract = product_contract(domain, decl.name, plan.problems)
        else:
            try:
                private_contract = private.load(domain.root, domain.name, decl.name)
            except ContractError as exc:
                plan.problems.extend(exc.problems)
        contracts[decl.name] = (contract, private_contract)
    # the domain's own daily-partitioned assets (a product's or a private contract declares the days)
    own_partitioned = {name for name, pair in contracts.items() if any(partitions.of(c) is not None for c in pair)}

    for decl in domain.declarations.values():
        contract, private_contract = contracts[decl.name]
        ports = _resolve_inputs(domain, decl, registry, plan)
        results: tuple[PolicyResult, ...] = ()
        if contract is not None and ports is not None:
            results = tuple(evaluate_policies(ProductUnderPolicy(domain.name, contract, _where(domain, decl), ports), plan.policies))
            plan.policy_results.extend(results)
            for result in results:
                plan.problems.extend(result.problems)
        # reads a daily-partitioned asset directly: another domain's port or one of its own domain
        reads_partitioned = (any(partitions.of(r.contract) is not None for r in (ports or {}).values())
                             or any(isinstance(s, str) and s in own_partitioned for s in decl.inputs.values()))
        # a partitioned asset's unpartitioned upstreams of other domains: read as they are when a day
        # is built (their updates rebuild no day); its own domain's (a model) rebuild every day
        read_whole = frozenset(r.key for r in (ports or {}).values() if partitions.of(r.contract) is None)
        foreign = frozenset(r.key for r in (ports or {}).values())  # never built in this domain's runs
        if contract is not None:
            spec = product_spec(domain.name, contract, owners, policy_names, has_inputs=bool(decl.inputs), quotas=plan.quotas,
                                reads_partitioned=reads_partitioned, read_whole=read_whole, refresh=decl.refresh,
                                catch_up=catch_up_pairs((ports or {}).values(), registry), foreign=foreign)
        else:
            spec = intermediate_spec(domain.name, decl.description or (decl.fn.__doc__ or "").strip() or None, owners, private_contract,
                                     has_inputs=bool(decl.inputs), reads_partitioned=reads_partitioned, read_whole=read_whole, refresh=decl.refresh,
                                     foreign=foreign)
        lineage = None
        if contract is not None and ports is not None:
            own = {f"{domain.name}/{s}": next((c for c in contracts.get(s, (None, None)) if c is not None), None) for s in decl.inputs.values() if isinstance(s, str)}
            found = column_lineage.problems(contract, ports, own)
            plan.problems.extend(found)
            lineage = None if found else column_lineage.lineage(contract, ports, own)
        plan.products.append(ProductPlan(domain.name, decl, contract, private_contract, ports or {}, results, spec, plan.quotas, lineage))
        if contract is not None:
            current = len(plan.products) - 1
            served = _previous_majors(domain, decl, contract, registry, owners, plan)
            if served:
                plan.products[current] = dataclasses.replace(plan.products[current], previous_majors=tuple(served))
    return plan


__all__ = ["DomainPlan", "ProductPlan", "plan_domain", "product_contract"]
