"""Column lineage declared in contracts: where each column of a product comes from.

A contract may say, per column, which upstream columns it is computed from: ODCS v3.1's
``transformSourceObjects`` on a property, each entry ``<domain>.<product>.<column>`` (the contract
id of an input port, then one of its columns), with ``transformLogic`` saying how, in words or SQL::

    - name: annual_premium
      transformSourceObjects: [policies.policies.annual_premium]
      transformLogic: copied from the claim's policy

Every source must be a column the product actually reads: a column of one of its declared input
ports (within the columns the port asks for), or of an asset of its own domain it reads by name
(a product of the domain, checked against that product's contract). Anything else fails the
domain's load, naming the contract file and the field. Each publish then carries
``dagster/column_lineage``, which the Dagster UI shows as the column's upstream columns.
"""

from __future__ import annotations

from typing import Mapping

import dagster as dg

from mesh_platform.contracts.model import Contract
from mesh_platform.foundations.problems import Problem, display_path


def _sources(contract: Contract):
    """(table, column, index, ``domain.product``, source column) of every declared source."""
    for table in contract.schema_objects:
        for col in table.properties:
            for i, ref in enumerate(col.transform_source_objects):
                product, _, column = str(ref).rpartition(".")
                yield table.name, col.name, i, product, column, str(ref)


def _readable(ports: Mapping, own: Mapping[str, Contract | None]) -> dict[str, tuple[dg.AssetKey, list[str] | None]]:
    """``domain.product`` -> (asset key, its readable columns; None: not known) of every input."""
    found: dict[str, tuple[dg.AssetKey, list[str] | None]] = {}
    for resolved in ports.values():
        found[resolved.contract.id] = (resolved.key, resolved.columns)
    for key_text, contract in own.items():
        domain, _, name = key_text.partition("/")
        found[f"{domain}.{name}"] = (dg.AssetKey([domain, name]), contract.column_names if contract is not None else None)
    return found


def problems(contract: Contract, ports: Mapping, own: Mapping[str, Contract | None]) -> list[Problem]:
    """A problem for each declared source that is not a column this product reads."""
    readable = _readable(ports, own)
    shown = display_path(contract.source) if contract.source else contract.id
    found = []
    for table, column, i, product, source_column, ref in _sources(contract):
        where = f"schema[{table}].properties[{column}].transformSourceObjects[{i}]"
        if not product or product not in readable:
            inputs = ", ".join(sorted(readable)) or "none"
            found.append(Problem(shown, where, f"{ref!r} is not a column of an input of this product (<domain>.<product>.<column>; its inputs: {inputs})"))
            continue
        columns = readable[product][1]
        if columns is not None and source_column not in columns:
            found.append(Problem(shown, where, f"{ref!r}: {product} has no column {source_column!r} that this product reads (it reads: {', '.join(columns)})"))
    return found


def lineage(contract: Contract, ports: Mapping, own: Mapping[str, Contract | None]) -> dg.TableColumnLineage | None:
    """The product's ``dagster/column_lineage`` (None when its contract declares none)."""
    readable = _readable(ports, own)
    deps: dict[str, list[dg.TableColumnDep]] = {}
    for _, column, _, product, source_column, _ in _sources(contract):
        if product in readable:
            deps.setdefault(column, []).append(dg.TableColumnDep(asset_key=readable[product][0], column_name=source_column))
    return dg.TableColumnLineage(deps_by_column=deps) if deps else None


def column_graph(contracts) -> dict[str, set[str]]:
    """``domain.product.column`` -> the columns it is computed from, over every contract given."""
    graph: dict[str, set[str]] = {}
    for contract in contracts:
        for _, column, _, product, source_column, _ in _sources(contract):
            graph.setdefault(f"{contract.id}.{column}", set()).add(f"{product}.{source_column}")
    return graph


def dbt_column_graph(plans) -> tuple[dict[str, set[str]], list[str]]:
    """The column graph of dbt models (``mesh_platform.dbt.plan.DbtPlan``), from their SQL where
    their contracts declare no lineage; and why a model's SQL could not be read, if so."""
    graph: dict[str, set[str]] = {}
    notes: list[str] = []
    for plan in plans:
        for model, contract in sorted(plan.contracts.items()):
            if column_graph([contract]):
                continue  # declared in the contract: column_graph over the contracts has it
            try:
                found = plan.model_columns(model).lineage
            except ValueError as exc:  # SqlNotAnalysable
                notes.append(str(exc))
                continue
            for column, sources in found.items():
                graph.setdefault(f"{contract.id}.{column}", set()).update(sources)
    return graph, notes


def trace(graph: dict[str, set[str]], column: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(upstream, downstream) of ``column``: (distance, ``domain.product.column``), nearest first."""

    def walk(edges: dict[str, set[str]]) -> list[tuple[int, str]]:
        seen, frontier, found = {column}, [column], []
        depth = 0
        while frontier:
            depth += 1
            nxt = sorted({n for c in frontier for n in edges.get(c, ()) if n not in seen})
            seen.update(nxt)
            found += [(depth, n) for n in nxt]
            frontier = nxt
        return found

    reverse: dict[str, set[str]] = {}
    for target, sources in graph.items():
        for source in sources:
            reverse.setdefault(source, set()).add(target)
    return walk(graph), walk(reverse)


__all__ = ["column_graph", "dbt_column_graph", "lineage", "problems", "trace"]
