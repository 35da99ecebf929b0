"""The mesh's product catalog: every data product, its contract, ports, lineage and freshness.

Lineage is between *products*: a product's upstream products are found by walking the asset graph
upwards through private intermediates (a model, a raw landing table) until products are reached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.storage.lake import Lake
from mesh_platform.foundations.settings import MeshSettings
from mesh_platform.mesh.workspace import Mesh, parents_in, walk


@dataclass
class CatalogEntry:
    key: str
    domain: str
    name: str
    contract_id: str
    version: str
    status: str
    owners: list[str]
    description: str | None
    access_level: str | None
    output_port: str
    input_ports: list[dict] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    downstream: list[str] = field(default_factory=list)
    last_materialized: str | None = None
    last_run_id: str | None = None
    row_count: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def build_catalog(mesh: Mesh, settings: MeshSettings, instance: dg.DagsterInstance | None = None) -> list[CatalogEntry]:
    lake = Lake(settings.lake)
    graph = mesh.asset_graph()
    entries: dict[dg.AssetKey, CatalogEntry] = {}
    for loaded in mesh.domains:
        if not loaded.ok:
            continue
        domain = loaded.domain
        for name, (contract, input_ports) in domain.products.items():
            key = dg.AssetKey([domain.name, name])
            ports = [
                {
                    "product": src.product,
                    "major": src.major,
                    "columns": list(src.columns) if src.columns else None,
                    "aggregate": src.aggregate is not None,
                }
                for src in input_ports
            ]
            entries[key] = CatalogEntry(
                key=key.to_user_string(),
                domain=domain.name,
                name=name,
                contract_id=contract.id,
                version=contract.version,
                status=contract.status,
                owners=contract.owners or list(domain.descriptor.owners),
                description=contract.purpose,
                access_level=contract.custom("accessLevel"),
                output_port=lake.uri(Lake.port_path(domain.name, name, contract.major)),
                input_ports=ports,
            )

    def upstream_products(key: dg.AssetKey) -> set[dg.AssetKey]:
        """The nearest products upstream of ``key``, seen through private intermediates."""
        through = lambda k: k not in entries and k in graph  # noqa: E731
        return {k for k in walk([key], parents_in(graph), through) if k in entries}

    for key, entry in entries.items():
        ups = upstream_products(key)
        entry.upstream = sorted(k.to_user_string() for k in ups)
        for up in ups:
            entries[up].downstream.append(entry.key)
    for entry in entries.values():
        entry.downstream.sort()

    if instance is not None:
        for key, entry in entries.items():
            event = instance.get_latest_materialization_event(key)
            if event is None:
                continue
            entry.last_materialized = _iso(event.timestamp)
            entry.last_run_id = event.run_id
            meta = event.asset_materialization.metadata if event.asset_materialization else {}
            # a partitioned port's latest materialization is one run's days: the table's rows are recorded apart
            rows = meta.get(md.TABLE_ROWS) or meta.get("dagster/row_count")
            entry.row_count = int(rows.value) if rows is not None else None
    return sorted(entries.values(), key=lambda e: e.key)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")
