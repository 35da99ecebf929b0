"""What a dbt model's SQL reads, column by column: its column lineage and the columns it uses.

Read from the model's SQL in the prepared manifest with sqlglot (which dagster-dbt already brings),
never by running dbt: ``{{ source(...) }}`` and ``{{ ref(...) }}`` are the only Jinja a mesh model
may use for this analysis, and each becomes a table whose columns are those of the contract behind
it (the input port's product at its pinned major, or the referenced model's own contract). Then:

- **lineage**: for each column of the model's contract, the upstream columns it is computed from
  (``<domain>.<product>.<column>``), as Dagster's ``dagster/column_lineage`` and ``mesh lineage
  column`` show them. ``count(*)`` depends on rows, not on a column: it has no source column.
- **reads**: every column of each input the SQL touches anywhere (select list, join keys,
  ``where``, ``group by``); what ``mesh contract check`` counts as read by the model, which is
  narrower than the columns its source declares.

A model whose SQL cannot be analysed (other Jinja, a dialect sqlglot does not parse) raises
:class:`SqlNotAnalysable` with the reason; callers degrade (the contract gate falls back to the
columns the source declares and says why), never guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from mesh_platform.dbt.project import DbtDomainProject

_SOURCE = re.compile(r"\{\{\s*source\(\s*['\"](\w+)['\"]\s*,\s*['\"](\w+)['\"]\s*\)\s*\}\}")
_REF = re.compile(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}")


class SqlNotAnalysable(ValueError):
    """A model's SQL that this analysis cannot read; the message says which model and why."""


@dataclass(frozen=True)
class ModelColumns:
    model: str
    lineage: dict[str, list[str]] = field(default_factory=dict)  # output column -> ["domain.product.column"]
    reads: dict[str, list[str]] = field(default_factory=dict)  # contract id -> columns used anywhere


def _table(kind: str, *parts: str) -> str:
    return "__".join(("mesh", kind, *parts))


def analyse(
    project: "DbtDomainProject",
    domain: str,
    model: str,
    output_columns: list[str],
    schemas: Mapping[str, list[str]],
) -> ModelColumns:
    """Lineage and reads of ``model`` (a model of ``project``, in ``domain``).

    ``schemas``: contract id -> its columns, for every product the model may read (its sources'
    products at their pinned majors, and the domain's own models it refs).
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import traverse_scope

    node = next((n for n in project.models().values() if n["name"] == model), None)
    if node is None:
        raise SqlNotAnalysable(f"{model}: no such model in {project.path}")
    sources = {(s["source_name"], s["name"]): uid for uid, s in project.manifest["sources"].items()}
    ports = project.source_ports()
    tables: dict[str, str] = {}  # the table name in the rewritten SQL -> contract id

    def source(match: re.Match) -> str:
        uid = sources.get((match.group(1), match.group(2)))
        if uid is None:
            raise SqlNotAnalysable(f"{model}: source {match.group(1)}.{match.group(2)} is not declared")
        name = _table("source", match.group(1), match.group(2))
        tables[name] = ports[uid].product
        return name

    def ref(match: re.Match) -> str:
        name = _table("ref", match.group(1))
        tables[name] = f"{domain}.{match.group(1)}"
        return name

    sql = _REF.sub(ref, _SOURCE.sub(source, node.get("raw_code") or node.get("raw_sql") or ""))
    if "{{" in sql or "{%" in sql:
        raise SqlNotAnalysable(f"{model}: its SQL uses Jinja beyond source() and ref()")
    unknown = sorted(cid for cid in tables.values() if cid not in schemas)
    if unknown:
        raise SqlNotAnalysable(f"{model}: reads {', '.join(unknown)}, whose contract is not known here")
    schema = {name: {col: "VARCHAR" for col in schemas[cid]} for name, cid in tables.items()}
    try:
        tree = qualify(sqlglot.parse_one(sql, dialect="duckdb"), schema=schema, dialect="duckdb")
        reads: dict[str, set[str]] = {}
        for scope in traverse_scope(tree):
            for column in scope.columns:
                table = scope.sources.get(column.table)
                if isinstance(table, exp.Table) and table.name in tables:
                    reads.setdefault(tables[table.name], set()).add(column.name)
        found: dict[str, list[str]] = {}
        for column in output_columns:
            try:
                root = lineage(column, tree, schema=schema, dialect="duckdb")
            except SqlglotError:
                continue  # not a column of the model's SQL: the contract check of the run says so
            upstream = set()
            for leaf in root.walk():
                if leaf.downstream or not isinstance(leaf.source, exp.Table) or leaf.source.name not in tables:
                    continue
                upstream.add(f"{tables[leaf.source.name]}.{leaf.name.rpartition('.')[2].strip(chr(34))}")
            if upstream:
                found[column] = sorted(upstream)
    except SqlglotError as exc:
        raise SqlNotAnalysable(f"{model}: its SQL cannot be parsed ({str(exc).splitlines()[0]})") from None
    return ModelColumns(model, found, {cid: sorted(cols) for cid, cols in reads.items()})


__all__ = ["ModelColumns", "SqlNotAnalysable", "analyse"]
