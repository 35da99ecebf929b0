"""SQL text the platform writes (DuckDB), in one place: how an identifier is quoted."""

from __future__ import annotations


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled): safe for any column or table name."""
    return '"' + name.replace('"', '""') + '"'


__all__ = ["quote_identifier"]
