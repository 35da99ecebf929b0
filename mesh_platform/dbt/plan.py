"""The resolved plan of a dbt-implemented domain: each model's contract, its input ports, its policies.

Part of :func:`mesh_platform.products.plan.plan_domain`: the same resolution a Python product gets, read from
the prepared dbt manifest (models, and sources that declare input ports in ``meta.mesh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import dagster as dg

from mesh_platform.lineage.columns import column_graph
from mesh_platform.lineage.columns import problems as column_lineage_problems
from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.governance.policies import PolicyResult, ProductUnderPolicy
from mesh_platform.governance.policies import evaluate as evaluate_policies
from mesh_platform.products.automation import catch_up_pairs
from mesh_platform.products.ports import InputPort, ResolvedPort, resolve
from mesh_platform.foundations.problems import Problem, display_path

if TYPE_CHECKING:
    from mesh_platform.dbt.project import DbtDomainProject

# ``Domain`` and ``DomainPlan`` are annotated by name only: mesh_platform.products.plan calls this module.


@dataclass
class DbtPlan:
    project: "DbtDomainProject"
    owners: list[str]
    policy_names: list[str]
    models: set[str] = field(default_factory=set)  # every model of the project, by name
    contracts: dict[str, Contract] = field(default_factory=dict)  # model -> its product's contract
    ports: dict[str, ResolvedPort] = field(default_factory=dict)  # source unique id -> input port
    model_ports: dict[str, dict[str, ResolvedPort]] = field(default_factory=dict)  # model -> the ports it reads
    policies: dict[str, tuple[PolicyResult, ...]] = field(default_factory=dict)  # model -> results at load
    quotas: object = None  # the domain's mesh_platform.governance.quotas.Quotas
    domain: str = ""
    catch_up: frozenset = frozenset()  # (U, P) among the sources: the marts wait for P to catch up with U (products.automation)

    analysed: dict = field(default_factory=dict, repr=False, compare=False)  # model -> model_columns' answer (or its error)

    def model_columns(self, name: str):
        """Column lineage and columns read of model ``name``, from its SQL
        (:func:`mesh_platform.dbt.sql_lineage.analyse`; raises ``SqlNotAnalysable``). Worked out
        once per plan: the SQL and the contracts do not change while the plan lives."""
        from mesh_platform.dbt.sql_lineage import SqlNotAnalysable, analyse

        if name not in self.analysed:
            schemas = {p.contract.id: p.contract.column_names for p in self.ports.values()}
            schemas.update({f"{self.domain}.{model}": c.column_names for model, c in self.contracts.items()})
            try:
                self.analysed[name] = analyse(self.project, self.domain, name, self.contracts[name].column_names, schemas)
            except SqlNotAnalysable as exc:
                self.analysed[name] = exc
        found = self.analysed[name]
        if isinstance(found, Exception):
            raise found
        return found

    def analyse_models(self) -> None:
        """Work out every model's column lineage ahead of the runs that publish it
        (:mod:`mesh_platform.deployment.run_preload`); a model whose SQL cannot be analysed is left
        for its run to say so."""
        from mesh_platform.dbt.sql_lineage import SqlNotAnalysable

        for name in self.contracts:
            try:
                self.model_columns(name)
            except SqlNotAnalysable:
                pass

    def warm_build(self) -> bool:
        """dbt's first build in this process, over empty sources with the columns each input port
        stages (:meth:`~mesh_platform.dbt.project.DbtDomainProject.warm_build`)."""
        import pyarrow as pa

        from mesh_platform.contracts.enforcement import arrow_schema

        sources = {}
        for unique_id, port in self.ports.items():
            schema = arrow_schema(port.contract)
            sources[unique_id] = pa.schema([schema.field(c) for c in port.columns if c in schema.names])
        return self.project.warm_build(sources)

    def column_lineage(self, name: str) -> dg.TableColumnLineage | None:
        """Model ``name``'s ``dagster/column_lineage``: what its contract declares
        (``transformSourceObjects``, checked at load), else what its SQL says; None when neither
        can tell (the SQL cannot be analysed: logged by the caller)."""
        keys = {p.contract.id: p.key for p in self.ports.values()}
        keys.update({f"{self.domain}.{model}": dg.AssetKey([self.domain, model]) for model in self.contracts})
        declared = column_graph([self.contracts[name]])
        found = {column.rpartition(".")[2]: sorted(sources) for column, sources in declared.items()}
        if not found:
            found = self.model_columns(name).lineage
        deps = {
            column: [dg.TableColumnDep(asset_key=keys[ref.rpartition(".")[0]], column_name=ref.rpartition(".")[2]) for ref in refs if ref.rpartition(".")[0] in keys]
            for column, refs in found.items()
        }
        deps = {column: found_deps for column, found_deps in deps.items() if found_deps}
        return dg.TableColumnLineage(deps_by_column=deps) if deps else None

    @property
    def ports_by_product(self) -> dict[str, tuple[Contract, list[InputPort]]]:
        return {name: (contract, [p.port for p in self.model_ports.get(name, {}).values()]) for name, contract in self.contracts.items()}


def resolve_sources(project: "DbtDomainProject", registry: ContractRegistry, domain: str) -> tuple[dict[str, ResolvedPort], list[tuple[str, str, str]]]:
    """Each source's input port, resolved; problems as (file, field, message)."""
    ports, problems = {}, []
    for uid, port in project.source_ports().items():
        source = project.manifest["sources"][uid]
        where = (str(project.path / source["original_file_path"]), f"sources[{source['source_name']}].tables[{source['name']}].meta.mesh")
        try:
            ports[uid] = resolve(port, registry, domain)
        except (LookupError, ValueError) as exc:
            problems.append((*where, str(exc).strip("'\"")))
    return ports, problems


def plan_dbt(domain: "Domain", registry: ContractRegistry, owners: list[str], plan: "DomainPlan", product_contract: Callable) -> DbtPlan | None:  # noqa: F821
    """The dbt part of ``domain``'s plan; None when the manifest cannot be read (a problem says why).

    ``product_contract(domain, name, problems)`` reads and checks a model's contract as
    :func:`mesh_platform.products.plan.product_contract` does for a Python product.
    """
    from mesh_platform.dbt.project import ManifestNotPrepared

    project = domain.dbt_project
    try:
        models = {node["name"]: uid for uid, node in project.models().items()}
        ports, port_problems = resolve_sources(project, registry, domain.name)
    except (ManifestNotPrepared, ValueError) as exc:
        plan.problems.append(Problem(display_path(project.path), "manifest", str(exc)))
        return None
    dbt = DbtPlan(project, owners, [p.name for p in plan.policies], models=set(models), ports=ports, quotas=plan.quotas, domain=domain.name)
    plan.problems.extend(Problem(display_path(f), fld, msg) for f, fld, msg in port_problems)
    dbt.catch_up = catch_up_pairs(ports.values(), registry)
    for name, uid in models.items():
        node = project.manifest["nodes"][uid]
        path = domain.contract_path(name)
        if not path.exists():
            plan.problems.append(Problem(display_path(project.path / node["original_file_path"]), name, f"dbt model {name!r} of domain {domain.name!r} has no contract {display_path(path)}"))
            continue
        contract = product_contract(domain, name, plan.problems)
        if contract is None:
            continue
        dbt.contracts[name] = contract
        dbt.model_ports[name] = {ports[d].contract.id: ports[d] for d in node["depends_on"]["nodes"] if d in ports}
        results = tuple(evaluate_policies(ProductUnderPolicy(domain.name, contract, display_path(project.path / "models" / "sources.yml"), dbt.model_ports[name]), plan.policies))
        dbt.policies[name] = results
        plan.policy_results.extend(results)
        for result in results:
            plan.problems.extend(result.problems)
    own = {f"{domain.name}/{model}": contract for model, contract in dbt.contracts.items()}
    for name, contract in dbt.contracts.items():
        plan.problems.extend(column_lineage_problems(contract, dbt.model_ports.get(name, {}), own))
    for uid, port in ports.items():
        plan.externals.setdefault(port.key, port.external_spec())
        source = project.manifest["sources"][uid]
        if (warning := port.deprecation(f"{domain.name}: dbt source {source['source_name']}.{source['name']}")) is not None:
            plan.warnings.append(warning)
    return dbt


__all__ = ["DbtPlan", "plan_dbt", "resolve_sources"]
