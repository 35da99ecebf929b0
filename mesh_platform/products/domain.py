"""A domain: its descriptor, its declared products, and the Dagster ``Definitions`` built from them.

A domain package looks like::

    domains/claims/
        domain.yaml          descriptor: name, kind, team, owners, contact, description
        contracts/*.yaml     one ODCS contract per data product
        definitions.py       ``domain = Domain.load(__file__)``, the transforms, ``defs = domain.definitions()``

``definitions()`` uses the deployment's settings, read once per domain (:attr:`Domain.settings`),
resolves the domain's plan (every contract, input port and policy:
:func:`mesh_platform.products.plan.plan_domain`, a pure function), and builds the assets from it
(:mod:`mesh_platform.products.build`, :mod:`mesh_platform.dbt.assets`), the external specs of upstream
products, and the IO manager. Every problem found (missing contract, unknown upstream
product, wrong major, unknown column, failed policy) is collected and raised together in one
:class:`DomainDefinitionError`, each line naming the file and field to fix.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.products.automation import automation_sensor, sla_schedule
from mesh_platform.foundations.problems import Problem
from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import ContractRegistry, mesh_registry
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake
from mesh_platform.storage.publishing import LastPublished
from mesh_platform.products.declarations import Declaration
from mesh_platform.products.descriptor import DESCRIPTOR, DomainDescriptor, load_descriptor
from mesh_platform.lineage.sensors import lineage_sensors
from mesh_platform.products.plan import DomainPlan, plan_domain
from mesh_platform.products.ports import InputPort
from mesh_platform.governance.quotas import run_tags as quota_run_tags
from mesh_platform.storage.retention import maintenance_job, maintenance_schedule
from mesh_platform.products.build import build_asset
from mesh_platform.foundations.settings import MeshSettings

# set on the log records of the warnings a load also keeps in its plan (DomainPlan.warnings): a
# command that reports those itself (`mesh validate`) drops the records, so each is said once
LOAD_WARNING = "mesh_load_warning"



class DomainDefinitionError(Exception):
    """A domain whose definitions cannot be built; lists every problem (file and field)."""

    def __init__(self, domain: str, problems: list[Problem]):
        self.domain = domain
        self.problems = problems
        super().__init__(f"domain {domain!r} cannot be loaded:\n" + "\n".join(f"  - {p}" for p in problems))


class Domain:
    """Declare a domain's products; build its code location."""

    def __init__(self, descriptor: DomainDescriptor, root: Path, settings: MeshSettings | None = None):
        self.descriptor = descriptor
        self.root = root
        self._settings = settings
        self.declarations: dict[str, Declaration] = {}
        self.downgrades: dict[tuple[str, int], Callable] = {}
        self.dbt_project = None
        self.last_plan: DomainPlan | None = None

    @classmethod
    def load(cls, module_file: str | Path, settings: MeshSettings | None = None) -> "Domain":
        """The domain whose ``domain.yaml`` sits next to ``module_file`` (pass ``__file__``).

        ``settings``: the mesh this domain belongs to; by default the deployment's, read from the
        environment once, at first use (:attr:`settings`)."""
        root = Path(module_file).resolve().parent
        return cls(load_descriptor(root / DESCRIPTOR), root, settings)

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def settings(self) -> MeshSettings:
        """The deployment's settings for this domain's code location: lake, home, sources, flags.

        Chosen once per domain and passed down from here: to every asset's step, the IO manager (its
        lake and home), the sensors and schedules, and the source resources the domain's module
        builds (``SqlDatabase.policy_admin(domain.settings)``).
        """
        if self._settings is None:
            # An entry point: a code location. A code server, a run worker or `mesh` itself imports the
            # domain's module, and this is where that process reads the deployment's settings for the
            # domain, once; nothing the domain builds reads them again. Given explicitly
            # (``Domain.load(file, settings)``), nothing is read: one process can hold two meshes.
            self._settings = MeshSettings.from_env()
        return self._settings

    def __repr__(self) -> str:
        return f"Domain({self.name!r}, products={self.product_names})"

    @property
    def product_names(self) -> list[str]:
        """Products declared in Python and, once built, those implemented by dbt models."""
        names = [d.name for d in self.declarations.values() if d.is_product]
        return names + [n for n in self.products if n not in names]

    # -- declaring ------------------------------------------------------------------------------

    def _declare(self, name: str | None, is_product: bool, inputs, kinds, resources, description, refresh: str | None = None) -> Callable:
        if refresh is not None:
            from dagster._utils.schedules import is_valid_cron_string

            if not is_valid_cron_string(refresh):
                raise ValueError(f"{self.name}: {name or 'asset'}: refresh must be a cron expression (e.g. '0 3 * * 1'), got {refresh!r}")

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
                refresh=refresh,
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
        refresh: str | None = None,
    ) -> Callable:
        """Declare a data product; its contract is ``contracts/<name>.yaml`` in this domain.

        ``inputs`` maps each parameter of the transform to an :class:`InputPort` (another
        domain's product) or to the name of an asset of this domain. A parameter named
        ``context`` receives the Dagster execution context. ``refresh`` (a cron): the product is
        rebuilt at those times when an input changed since, instead of at every input's update
        (``docs/automation.md``).
        """
        return self._declare(name, True, inputs, kinds, resources, None, refresh)

    def asset(
        self,
        name: str | None = None,
        *,
        inputs: dict[str, InputPort | str] | None = None,
        kinds: Iterable[str] = (),
        resources: Iterable[str] = (),
        description: str | None = None,
        refresh: str | None = None,
    ) -> Callable:
        """Declare a private intermediate: stored in the lake, never published as a port.

        ``refresh`` (a cron), as for :meth:`product`: a model retrained weekly rather than on every
        new day of data. Its transform may return :class:`mesh_platform.NotYet` when its inputs do not
        allow a build yet (too few labels): the step then succeeds without storing anything, and
        what reads it waits (``docs/automation.md``)."""
        return self._declare(name, False, inputs, kinds, resources, description, refresh)

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

    def plan(self, registry: ContractRegistry | None = None) -> DomainPlan:
        """Resolve every declared asset against the mesh (:func:`mesh_platform.products.plan.plan_domain`)."""
        self.last_plan = plan_domain(self, registry if registry is not None else mesh_registry())
        return self.last_plan

    @property
    def products(self) -> dict[str, tuple[Contract, list[InputPort]]]:
        """Each published product with the input ports it reads (from the last plan)."""
        return self.last_plan.ports_by_product if self.last_plan is not None else {}

    @property
    def input_ports(self) -> dict[str, list[InputPort]]:
        """Each asset with the input ports it reads, private intermediates included (from the last plan)."""
        return self.last_plan.ports_by_asset if self.last_plan is not None else {}

    @property
    def policy_results(self) -> list:
        return self.last_plan.policy_results if self.last_plan is not None else []

    def build_assets(self, registry: ContractRegistry | None = None, settings: MeshSettings | None = None) -> tuple[list[dg.AssetsDefinition], list[dg.AssetSpec]]:
        """The domain's assets and the external specs of the products it consumes (built with
        ``settings``, by default the domain's own, :attr:`settings`)."""
        settings = settings or self.settings
        fallback = LastPublished(registry if registry is not None else mesh_registry(), Lake(settings.lake))
        plan = self.plan(fallback)
        if plan.problems:
            raise DomainDefinitionError(self.name, plan.problems)
        for warning in plan.warnings:  # a pin to a deprecated major: said at every load until it moves
            logging.getLogger("mesh_platform").warning("%s", warning, extra={LOAD_WARNING: True})
        self._say_last_published(plan, fallback.used)
        assets = [build_asset(p, settings) for p in plan.products]
        if plan.dbt is not None:
            from mesh_platform.dbt.assets import dbt_domain_assets

            assets.insert(0, dbt_domain_assets(self.name, plan.dbt, settings))
        return assets, list(plan.externals.values())

    def _say_last_published(self, plan: DomainPlan, used: dict[str, str]) -> None:
        """A producer whose contract file is broken: this domain loads against what it last published,
        and says so (a warning at load, ``mesh validate``, and the port's page in the UI)."""
        for contract_id, why in used.items():
            plan.warnings.append(f"{self.name}: input port {contract_id}: {why}")
            logging.getLogger("mesh_platform").warning("%s", plan.warnings[-1], extra={LOAD_WARNING: True})
            for key, spec in list(plan.externals.items()):
                if key.path[0] == contract_id.split(".", 1)[0] and spec.metadata.get(md.CONTRACT_ID, contract_id) == contract_id:
                    plan.externals[key] = spec.merge_attributes(metadata={md.CONTRACT_SOURCE: why})

    def definitions(
        self,
        *,
        resources: dict[str, Any] | None = None,
        sensors: Iterable[dg.SensorDefinition] = (),
        schedules: Iterable[dg.ScheduleDefinition] = (),
        jobs: Iterable[Any] = (),
        registry: ContractRegistry | None = None,
    ) -> dg.Definitions:
        """This domain's code location.

        The deployment's settings (:attr:`settings`: lake, home, flags, chosen once per domain) are
        passed down from here to every asset's step, the IO manager, the sensors and the schedules.
        """
        settings = self.settings
        assets, externals = self.build_assets(registry, settings)
        schedules = list(schedules)
        if self.descriptor.kind == "source-aligned":  # fed by operational systems: refreshed on its SLA
            sla = sla_schedule(self.name, [contract for contract, _ in self.products.values()], settings.automation, self.run_tags())
            if sla is not None and all(s.name != sla.name for s in schedules):
                schedules.append(sla)
        maintenance = maintenance_job(self.name, {name: contract for name, (contract, _) in self.products.items()}, settings.lake, self.run_tags())
        if all(s.name != f"{maintenance.name}_daily" for s in schedules):
            schedules.append(maintenance_schedule(maintenance, settings.automation))
        jobs = [*jobs, maintenance]
        all_resources = {"io_manager": MeshIOManager(domain=self.name, lake=settings.lake, home=settings.home)}
        all_resources.update(resources or {})
        return dg.Definitions(
            assets=[*assets, *externals],
            resources=all_resources,
            sensors=[*sensors, automation_sensor(self.name, settings.automation, self.run_tags(), settings.automation_interval), *lineage_sensors(self.name, settings)],
            schedules=schedules,
            # MESH_EXECUTOR=in_process: a run's steps share its process (`mesh stack up` on one machine)
            executor=dg.in_process_executor if settings.executor == "in_process" else None,
            jobs=list(jobs),
            metadata={md.DOMAIN: self.name, md.TEAM: self.descriptor.team},
        )

    def job(self, name: str | None = None, selection: dg.AssetSelection | None = None) -> dg.UnresolvedAssetJobDefinition:
        """A job over this domain's assets (all of them by default), tagged with the domain and its run-time quota."""
        return dg.define_asset_job(
            name or f"{self.name}_products",
            selection=selection or dg.AssetSelection.groups(self.name),
            tags=self.run_tags(),
        )

    def run_tags(self) -> dict[str, str]:
        """Tags of every run of this domain: ``mesh/domain`` (the run queue's per-domain limit) and
        ``dagster/max_runtime`` (run monitoring fails a run over the domain's ``max_run_seconds``)."""
        return quota_run_tags(self.name, self.root)
