"""Dagster's Postgres storages with their connections held open (``infra/dagster.yaml``).

Dagster's Postgres storages open a new connection for every query (SQLAlchemy's ``NullPool``), so
that an instance made for a moment holds nothing open; only the webserver keeps one
(``optimize_for_webserver``). Everything else the daemon and the runs do pays a Postgres backend
start per query: measured in ``mesh stack up`` with 5-s ticks, about 105 new connections a second
while the mesh was idle, about 9 ms each on loopback, and Postgres alone using 38 % of a core. A
run paid it on every event it stored.

These subclasses differ from Dagster's in one thing: a small pool per storage (connections opened
when needed, kept for the next query, checked before reuse, renewed hourly), closed when the
instance is disposed. The tables, queries and migrations are Dagster's own. Every process that
opens the instance gets them through the instance's file: the daemon, the webserver, each code
server and each run.

On Kubernetes, Dagster's Helm chart writes the instance file itself with Dagster's classes; put a
connection pooler (PgBouncer, RDS Proxy) in front of Postgres there (``docs/production.md``).
"""

from __future__ import annotations

from typing import Any

from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_SIZE = 4
"""Connections a storage keeps open between queries: the daemon evaluates sensors and automation in
threads (``infra/dagster.yaml``: 4 workers each)."""
MAX_OVERFLOW = 8
"""Connections a storage may open on top while busy (closed when returned)."""
RECYCLE_SECONDS = 3600


class _Pooled:
    """Dagster's constructor checks the tables as usual; then the storage's engine becomes a pooled one."""

    _engine: Any
    postgres_url: str

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider=token_provider)  # type: ignore[call-arg]
        self._engine.dispose()
        self._engine = create_pg_engine(self.postgres_url, token_provider, isolation_level="AUTOCOMMIT", pool_size=POOL_SIZE,
                                        max_overflow=MAX_OVERFLOW, pool_recycle=RECYCLE_SECONDS, pool_pre_ping=True)

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """Dagster's run storage, pooled."""


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """Dagster's event log storage, pooled."""


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """Dagster's schedule storage, pooled."""
