"""A domain: its descriptor, its declared products, and the Dagster ``Definitions`` built from them.

A domain package looks like::

    domains/claims/
        domain.yaml          descriptor: name, kind, team, owners, contact, description
        contracts/*.yaml     one ODCS contract per data product
        definitions.py       ``domain = Domain.load(__file__)``, the transforms, ``defs = domain.definitions()``

``definitions()`` resolves every input port against the mesh's contracts and builds the assets,
the external specs of upstream products, and the IO manager. Every problem found (missing contract,
unknown upstream product, wrong major, unknown column) is collected and raised together in one
:class:`DomainDefinitionError`, each line naming the file and field to fix.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh_platform.automation import automation_sensor, sla_schedule
from mesh_platform.governance.policies import GLOBAL_POLICIES, ProductUnderPolicy, domain_policies
from mesh_platform.governance.policies import evaluate as evaluate_policies
from mesh_platform.contracts.loader import ContractError, Problem, display_path, exception_problem, load_contract, load_yaml
from mesh_platform.contracts.model import IDENTIFIER, Contract
from mesh_platform.contracts.registry import VERSIONED, ContractRegistry, contract_files, mesh_registry
from mesh_platform.io.io_manager import MeshIOManager
from mesh_platform.ports import InputPort, ResolvedPort, resolve
from mesh_platform.products import Declaration, build_asset

DESCRIPTOR = "domain.yaml"


def _projection(columns: list[str]) -> Callable:
    def project(current):
        return current[columns]

    return project


class DomainDefinitionError(Exception):
    """A domain whose definitions cannot be built; lists every problem (file and field)."""

    def __init__(self, domain: str, problems: list[Problem]):
        self.domain = domain
        self.problems = problems
        super().__init__(f"domain {domain!r} cannot be loaded:\n" + "\n".join(f"  - {p}" for p in problems))


class DomainDescriptor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["source-aligned", "consumer-aligned", "aggregate"]
    description: str
    team: str
    owners: list[str] = Field(min_length=1)
    contact: str | None = None
    clearances: list[str] = Field(default_factory=list)
    deployment: dict[str, Any] | None = None  # production deployment settings, read by `mesh helm` (mesh_platform/helm.py)


def load_descriptor(path: Path) -> DomainDescriptor:
    shown = display_path(path)
    if not path.exists():
        raise ContractError([Problem(shown, "", "domain descriptor not found")])
    raw = load_yaml(path)
    try:
        descriptor = DomainDescriptor.model_validate(raw)
    except ValidationError as exc:
        raise ContractError([Problem(shown, ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]) from None
    if not IDENTIFIER.match(descriptor.name):
        raise ContractError([Problem(shown, "name", f"domain name {descriptor.name!r} must be snake_case")])
    if descriptor.name != path.parent.name:
        raise ContractError([Problem(shown, "name", f"domain {descriptor.name!r} must live in a folder of the same name, not {path.parent.name!r}")])
    return descriptor


class Domain:
    """Declare a domain's products; build its code location."""

    def __init__(self, descriptor: DomainDescriptor, root: Path):
        self.descriptor = descriptor
        self.root = root
        self.declarations: dict[str, Declaration] = {}
        self.downgrades: dict[tuple[str, int], Callable] = {}
        self.policy_results: list = []
        self.dbt_project = None
        self.products: dict[str, tuple[Contract, list[InputPort]]] = {}

    @classmethod
    def load(cls, module_file: str | Path) -> "Domain":
        """The domain whose ``domain.yaml`` sits next to ``module_file`` (pass ``__file__``)."""
        root = Path(module_file).resolve().parent
        return cls(load_descriptor(root / DESCRIPTOR), root)

    @property
    def name(self) -> str:
        return self.descriptor.name

    def __repr__(self) -> str:
        return f"Domain({self.name!r}, products={self.product_names})"

    @property
    def product_names(self) -> list[str]:
        """Products declared in Python and, once built, those implemented by dbt models."""
        names = [d.name for d in self.declarations.values() if d.is_product]
        return names + [n for n in self.products if n not in names]

    # -- declaring ------------------------------------------------------------------------------

    def _declare(self, name: str | None, is_product: bool, inputs, kinds, resources, description) -> Callable:
        def decorator(fn: Callable) -> Declaration:
            decl = Declaration(
                name=name or fn.__name__,
                fn=fn,
                inputs=dict(inputs or {}),
                kinds=tuple(kinds),
                required_resource_keys=frozenset(resources),
                is_product=is_product,
                description=description,
                declared_in=inspect.getsourcefile(fn),
            )
            if decl.name in self.declarations:
                raise ValueError(f"{self.name}: {decl.name!r} is declared twice")
            self.declarations[decl.name] = decl
            return decl

        return decorator

    def product(
        self,
        name: str | None = None,
        *,
        inputs: dict[str, InputPort | str] | None = None,
        kinds: Iterable[str] = (),
        resources: Iterable[str] = (),
    ) -> Callable:
        """Declare a data product; its contract is ``contracts/<name>.yaml`` in this domain.

        ``inputs`` maps each parameter of the transform to an :class:`InputPort` (another
        domain's product) or to the name of an asset of this domain. A parameter named
        ``context`` receives the Dagster execution context.
        """
        return self._declare(name, True, inputs, kinds, resources, None)

    def asset(
        self,
        name: str | None = None,
        *,
        inputs: dict[str, InputPort | str] | None = None,
        kinds: Iterable[str] = (),
        resources: Iterable[str] = (),
        description: str | None = None,
    ) -> Callable:
        """Declare a private intermediate: stored in the lake, never published as a port."""
        return self._declare(name, False, inputs, kinds, resources, description)

    def downgrade(self, product: str, major: int) -> Callable:
        """Serve a previous major of ``product`` from the current data until its deprecation date.

        The function takes the current product's DataFrame and returns the previous major's shape.
        Without one, a kept previous major is served by selecting its columns from the current data.
        """

        def decorator(fn: Callable) -> Callable:
            self.downgrades[(product, int(major))] = fn
            return fn

        return decorator

    def dbt(self, project_dir: str | Path) -> None:
        """Implement this domain's products (those of its contracts that are dbt models) with dbt.

        The dbt project's sources declare the input ports (``meta.mesh``); see ``docs/dbt.md``.
        """
        from mesh_platform.dbt.project import DbtDomainProject

        self.dbt_project = DbtDomainProject(Path(project_dir).resolve())

    # -- building -------------------------------------------------------------------------------

    def contract_path(self, product: str) -> Path:
        return self.root / "contracts" / f"{product}.yaml"

    def _where(self, decl: Declaration) -> str:
        return display_path(decl.declared_in or self.root / "definitions.py")

    def _product_contract(self, decl: Declaration, problems: list[Problem]) -> Contract | None:
        path = self.contract_path(decl.name)
        try:
            contract = load_contract(path)
        except ContractError as exc:
            problems.extend(exc.problems)
            return None
        if contract.domain != self.name:
            problems.append(Problem(display_path(path), "domain", f"says {contract.domain!r}, but the contract belongs to domain {self.name!r}"))
            return None
        if contract.name != decl.name:
            problems.append(Problem(display_path(path), "name", f"says {contract.name!r}, but the product is declared as {decl.name!r}"))
            return None
        return contract

    def build_assets(self, registry: ContractRegistry | None = None) -> tuple[list[dg.AssetsDefinition], list[dg.AssetSpec]]:
        """The domain's assets and the external specs of the products it consumes."""
        registry = registry if registry is not None else mesh_registry()
        problems: list[Problem] = []
        assets: list[dg.AssetsDefinition] = []
        externals: dict[dg.AssetKey, dg.AssetSpec] = {}
        owners = list(self.descriptor.owners)

        try:
            policies = GLOBAL_POLICIES + domain_policies(self.root)
        except Exception as exc:  # the domain's own policies.py is broken
            problems.append(exception_problem(exc, "policies cannot load: "))
            policies = list(GLOBAL_POLICIES)
        self.policy_results = []
        self.products = {}

        dbt_models: set[str] = set()
        if self.dbt_project is not None:
            dbt_assets_def, dbt_externals, dbt_models = self._build_dbt(registry, owners, policies, problems)
            if dbt_assets_def is not None:
                assets.append(dbt_assets_def)
                externals.update(dbt_externals)

        declared_products = set(self.product_names) | dbt_models
        for path in contract_files(self.root):
            if path.stem not in declared_products and not VERSIONED.match(path.stem):
                try:
                    contract = load_contract(path)
                except ContractError as exc:
                    problems.extend(exc.problems)
                    continue
                if contract.status not in ("draft", "proposed"):
                    problems.append(Problem(display_path(path), "name", f"contract {contract.id!r} is {contract.status} but no product {path.stem!r} is declared in this domain"))

        for decl in self.declarations.values():
            contract: Contract | None = None
            if decl.is_product:
                contract = self._product_contract(decl, problems)
            ports: dict[str, ResolvedPort] = {}
            signature = inspect.signature(decl.fn).parameters
            for param, source in decl.inputs.items():
                field = f"{decl.name}.inputs[{param}]"
                if param not in signature and not any(p.kind is p.VAR_KEYWORD for p in signature.values()):
                    problems.append(Problem(self._where(decl), field, f"the transform has no parameter {param!r}"))
                    continue
                if isinstance(source, InputPort):
                    try:
                        ports[param] = resolve(source, registry, self.name)
                    except (LookupError, ValueError) as exc:
                        problems.append(Problem(self._where(decl), field, str(exc).strip("'\"")))
                        continue
                    externals.setdefault(ports[param].key, ports[param].external_spec())
                elif isinstance(source, str):
                    if source not in self.declarations:
                        problems.append(Problem(self._where(decl), field, f"no asset {source!r} in domain {self.name!r} (declared: {', '.join(self.declarations)})"))
                else:
                    problems.append(Problem(self._where(decl), field, f"expected an InputPort or an asset name, got {source!r}"))
            if contract is not None and len(ports) == len([s for s in decl.inputs.values() if isinstance(s, InputPort)]):
                results = evaluate_policies(ProductUnderPolicy(self.name, contract, self._where(decl), ports), policies)
                self.policy_results.extend(results)
                for result in results:
                    problems.extend(result.problems)
            if not problems:
                assets.append(build_asset(self.name, decl, contract, ports, owners, [p.name for p in policies]))
                if contract is not None:
                    self.products[decl.name] = (contract, [p.port for p in ports.values()])
            if contract is not None:
                assets.extend(self._previous_major_assets(decl, contract, registry, owners, problems))
        if problems:
            raise DomainDefinitionError(self.name, problems)
        return assets, list(externals.values())

    def _build_dbt(self, registry, owners, policies, problems):
        from mesh_platform.dbt.assets import dbt_domain_assets, resolve_sources
        from mesh_platform.dbt.project import ManifestNotPrepared

        project = self.dbt_project
        try:
            models = {node["name"]: uid for uid, node in project.models().items()}
            ports, port_problems = resolve_sources(project, registry, self.name)
        except (ManifestNotPrepared, ValueError) as exc:
            problems.append(Problem(display_path(project.path), "manifest", str(exc)))
            # without a manifest the models are unknown: do not also report every contract as orphaned
            return None, {}, {p.stem for p in contract_files(self.root)}
        problems.extend(Problem(display_path(f), fld, msg) for f, fld, msg in port_problems)
        contracts: dict[str, Contract] = {}
        for name, uid in models.items():
            path = self.contract_path(name)
            if not path.exists():
                problems.append(Problem(display_path(project.path / project.manifest["nodes"][uid]["original_file_path"]), name, f"dbt model {name!r} of domain {self.name!r} has no contract {display_path(path)}"))
                continue
            decl = Declaration(name=name, fn=lambda: None, declared_in=str(project.path / project.manifest["nodes"][uid]["original_file_path"]))
            contract = self._product_contract(decl, problems)
            if contract is None:
                continue
            contracts[name] = contract
            node = project.manifest["nodes"][uid]
            model_ports = {ports[d].contract.id: ports[d] for d in node["depends_on"]["nodes"] if d in ports}
            self.products[name] = (contract, [p.port for p in model_ports.values()])
            results = evaluate_policies(ProductUnderPolicy(self.name, contract, display_path(project.path / "models" / "sources.yml"), model_ports), policies)
            self.policy_results.extend(results)
            for result in results:
                problems.extend(result.problems)
        if problems:
            return None, {}, set(models)
        assets_def = dbt_domain_assets(self.name, project, contracts, ports, owners, [p.name for p in policies])
        externals = {port.key: port.external_spec() for port in ports.values()}
        return assets_def, externals, set(models)

    def _previous_major_assets(self, decl, contract, registry, owners, problems) -> list[dg.AssetsDefinition]:
        """One asset per previous major still served: ``<product>_v<major>``, derived from the current product."""
        built = []
        for old in registry.previous_majors(contract.id):
            if old.retired():
                continue
            fn = self.downgrades.get((decl.name, old.major))
            if fn is None:
                missing = [c for c in old.column_names if c not in contract.column_names]
                if missing:
                    problems.append(Problem(
                        display_path(old.source), "schema",
                        f"major {old.major} needs columns the current major no longer has ({', '.join(missing)}); "
                        f"declare @domain.downgrade({decl.name!r}, major={old.major}) in {self._where(decl)}",
                    ))
                    continue
                fn = _projection(old.column_names)
            shim = Declaration(
                name=f"{decl.name}_v{old.major}",
                fn=fn,
                inputs={"current": decl.name},
                is_product=True,
                declared_in=decl.declared_in,
            )
            built.append(build_asset(self.name, shim, old, {}, owners))
        return built

    def definitions(
        self,
        *,
        resources: dict[str, Any] | None = None,
        sensors: Iterable[dg.SensorDefinition] = (),
        schedules: Iterable[dg.ScheduleDefinition] = (),
        jobs: Iterable[Any] = (),
        registry: ContractRegistry | None = None,
    ) -> dg.Definitions:
        """This domain's code location."""
        assets, externals = self.build_assets(registry)
        schedules = list(schedules)
        if self.descriptor.kind == "source-aligned":  # fed by operational systems: refreshed on its SLA
            sla = sla_schedule(self.name, [contract for contract, _ in self.products.values()])
            if sla is not None and all(s.name != sla.name for s in schedules):
                schedules.append(sla)
        all_resources = {"io_manager": MeshIOManager(domain=self.name)}
        all_resources.update(resources or {})
        return dg.Definitions(
            assets=[*assets, *externals],
            resources=all_resources,
            sensors=[*sensors, automation_sensor(self.name)],
            schedules=schedules,
            # MESH_EXECUTOR=in_process: a run's steps share its process (`mesh stack up` on one machine)
            executor=dg.in_process_executor if os.environ.get("MESH_EXECUTOR") == "in_process" else None,
            jobs=list(jobs),
            metadata={"mesh/domain": self.name, "mesh/team": self.descriptor.team},
        )

    def job(self, name: str | None = None, selection: dg.AssetSelection | None = None) -> dg.UnresolvedAssetJobDefinition:
        """A job over this domain's assets (all of them by default)."""
        return dg.define_asset_job(
            name or f"{self.name}_products",
            selection=selection or dg.AssetSelection.groups(self.name),
            tags={"mesh/domain": self.name},
        )
