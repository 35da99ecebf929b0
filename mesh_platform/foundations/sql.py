"""SQL text the platform writes (DuckDB), in one place: how an identifier and a string are quoted."""

from __future__ import annotations


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled): safe for any column or table name."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal (embedded single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


__all__ = ["quote_identifier", "quote_literal"]
