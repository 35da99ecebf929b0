"""The production instance (``infra/dagster.yaml``) on a real PostgreSQL: Dagster's storages, holding
their connections open (``mesh_platform/deployment/instance_storage.py``).

Each query of Dagster's stock Postgres storages opens a connection (a Postgres backend started and
ended per query); the instance here reuses a few. Counted with Postgres' own ``sessions`` counter.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from mesh_platform.deployment.stack import postgres
from mesh_platform.deployment.stack.layout import StackError, StackLayout, StackState

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    try:
        postgres.postgres_bin()
    except StackError:
        pytest.skip("Debian's postgresql is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("pg")
    layout, state = StackLayout(root), StackState()
    url = postgres.start_postgres(layout, state, progress=lambda _: None)
    try:
        yield url
    finally:
        postgres.stop_postgres(state.postgres)


def _sessions(url: str) -> int:
    """Connections Postgres has accepted on the database so far (``pg_stat_database.sessions``)."""
    import psycopg2

    con = psycopg2.connect(postgres.libpq_url(url))
    try:
        with con.cursor() as cur:
            cur.execute("select pg_stat_force_next_flush()")
            cur.execute("select sessions from pg_stat_database where datname = current_database()")
            return cur.fetchone()[0]
    finally:
        con.close()


def _instance(home: Path, yaml_text: str, url: str, monkeypatch) -> dg.DagsterInstance:
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml_text)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    monkeypatch.setenv("MESH_COMPUTE_LOGS_BUCKET", "mesh-logs")
    return dg.DagsterInstance.from_config(str(home))


def _work(instance: dg.DagsterInstance) -> None:
    """What the daemon and a run do all day: read runs and assets, record events (40 queries or more)."""
    for i in range(10):
        instance.get_runs(limit=5)
        instance.get_asset_records()
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["claims", "claims"], partition=f"2026-12-0{i % 9 + 1}"))
        instance.get_latest_materialization_event(dg.AssetKey(["claims", "claims"]))


def test_the_instance_reuses_its_connections_and_closes_them_when_disposed(pg_url, tmp_path, monkeypatch):
    from mesh_platform.deployment import instance_storage

    instance = _instance(tmp_path / "mesh", (ROOT / "infra" / "dagster.yaml").read_text(), pg_url, monkeypatch)
    assert isinstance(instance.run_storage, instance_storage.PooledPostgresRunStorage)
    assert isinstance(instance.event_log_storage, instance_storage.PooledPostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, instance_storage.PooledPostgresScheduleStorage)
    before = _sessions(pg_url)
    _work(instance)
    pooled = _sessions(pg_url) - before - 1  # (the count's own connection)
    held = [s._engine.pool.checkedin() for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)]
    instance.dispose()
    assert [s._engine.pool.checkedin() for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)] == [0, 0, 0]
    assert sum(held) >= 2  # the connections were kept between queries, until the instance was disposed

    # the same work on Dagster's stock storage: a connection per query
    stock = _instance(tmp_path / "stock", "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_POSTGRES_URL\n", pg_url, monkeypatch)
    before = _sessions(pg_url)
    _work(stock)
    per_query = _sessions(pg_url) - before - 1
    stock.dispose()
    assert per_query >= 40 and pooled <= 3 * instance_storage.POOL_SIZE, (pooled, per_query)


def test_the_pooled_instance_is_what_every_process_opens_from_the_reference(pg_url, tmp_path, monkeypatch):
    """Code servers and runs open the instance from its reference (``DagsterInstance.from_ref``)."""
    from mesh_platform.deployment import instance_storage

    instance = _instance(tmp_path / "mesh", (ROOT / "infra" / "dagster.yaml").read_text(), pg_url, monkeypatch)
    with dg.DagsterInstance.from_ref(instance.get_ref()) as opened:
        assert isinstance(opened.event_log_storage, instance_storage.PooledPostgresEventLogStorage)
        opened.report_runless_asset_event(dg.AssetMaterialization(asset_key=["policies", "policies"]))
    assert instance.get_latest_materialization_event(dg.AssetKey(["policies", "policies"])) is not None
    instance.dispose()
