"""SQL over what the caller may read: DuckDB with nothing but the caller's granted products in it.

Each query gets a fresh in-memory DuckDB with external access disabled, extensions neither
installed nor loaded, and its configuration locked before the query runs: ``read_csv``,
``read_parquet``, ``COPY``, ``ATTACH``, ``INSTALL``, ``LOAD`` and every other file or network
access fail inside DuckDB itself, whatever the query says. Before that, the query must be one
``SELECT`` (writes and other statements are refused with the reason), and the products it names
(``<domain>.<product>``, or ``<domain>.<product>_v<major>`` for a previous major) are decided one by
one with the same access decision as a Dagster read; only those granted are registered, as views
over the port the caller may see (the masked variant for consumers not cleared). An ungranted,
pending, expired or aggregate-only product refuses the whole query. Memory and threads are bounded
per query; :mod:`.limits` cancels it after the caller's ``serve_query_seconds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ALLOWED = {"SELECT"}
_VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)_v(?P<major>[0-9]+)$")


class SqlRefused(ValueError):
    """A query refused before it ran: not one SELECT, or it cannot be parsed."""


@dataclass
class Referenced:
    """A product a query names: ``schema.table`` in the SQL and the contract reference it means."""

    sql_name: str
    product: str  # contract id
    major: int | None  # None: the current major
    columns: set[str] = field(default_factory=set)  # the columns the query names (empty: every column, SELECT *)


def check_statement(query: str) -> None:
    """One SELECT (a WITH ... SELECT included), or :class:`SqlRefused` saying what was sent."""
    import duckdb

    if not query or not query.strip():
        raise SqlRefused("empty query: send {\"query\": \"SELECT ...\"}")
    with duckdb.connect(config={"enable_external_access": False}) as con:
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as exc:
            raise SqlRefused(f"the query cannot be parsed: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise SqlRefused(f"send one statement at a time, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in ALLOWED:
        raise SqlRefused(f"only SELECT queries are served; this is a {kind} statement (no writes, no ATTACH, COPY, INSTALL, LOAD or SET)")


def referenced_products(query: str) -> list[Referenced]:
    """The ``<domain>.<product>`` tables the query reads (CTE names and unqualified names excluded)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    try:
        tree = sqlglot.parse_one(query, dialect="duckdb")
    except SqlglotError as exc:
        raise SqlRefused(f"the query cannot be parsed: {str(exc).splitlines()[0]}") from None
    found: dict[str, Referenced] = {}
    for table in tree.find_all(exp.Table):
        if not table.db:  # a CTE, or a name DuckDB will not find: products are <domain>.<product>
            continue
        if table.catalog:
            raise SqlRefused(f"{table.sql(dialect='duckdb')}: name products as <domain>.<product>")
        name = f"{table.db}.{table.name}"
        versioned = _VERSIONED.match(table.name)
        if versioned:
            found.setdefault(name, Referenced(name, f"{table.db}.{versioned.group('name')}", int(versioned.group("major"))))
        else:
            found.setdefault(name, Referenced(name, name, None))
    used = {column.name for column in tree.find_all(exp.Column)}
    for join in tree.find_all(exp.Join):
        used |= {ident.name for ident in join.args.get("using") or []}
    projections = [e for select in tree.find_all(exp.Select) for e in select.expressions]
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)) for e in projections):
        used = set()  # SELECT *: every column the caller may see
    for ref in found.values():  # narrowed to each product's own columns by the caller (the audit)
        ref.columns = set(used)
    return list(found.values())


def connect(memory_limit: str, threads: int):
    """A DuckDB connection that reaches nothing outside itself (configuration locked by :func:`lock`)."""
    import duckdb

    return duckdb.connect(config={
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": memory_limit,
        "threads": threads,
        "max_temp_directory_size": "0B",  # nothing spills to disk: a query over the memory limit fails
    })


def register(con, index: int, sql_name: str, dataset) -> None:
    """The product as a view ``<domain>.<product>`` over its dataset (the port the caller may see)."""
    domain, _, table = sql_name.partition(".")
    raw = f"__mesh_port_{index}"
    con.register(raw, dataset)
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{domain}"')
    con.execute(f'CREATE VIEW "{domain}"."{table}" AS SELECT * FROM {raw}')


def lock(con) -> None:
    con.execute("SET lock_configuration = true")


__all__ = ["Referenced", "SqlRefused", "check_statement", "connect", "lock", "referenced_products", "register"]
