"""The IO manager every domain gets: contract-enforced, atomic publishing to the lake.

Write path (a product materializes): the DataFrame is conformed to its contract
(:func:`mesh_platform.contracts.conform`: columns, types, required, unique, primary key); only if
that passes is it written to a staging file and renamed over the port's last good version. The
materialization records ``dagster/uri``, row count, bytes and the contract version.

Read path (an input port or a local upstream): only the columns the consumer declared are read
from the Parquet file.

Which contract applies is read from the asset's own metadata (``mesh/contract_id``, set by the
platform when it builds the asset) and looked up in the mesh's contract registry, so the IO manager
itself holds no per-domain state and can be configured like any Dagster resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from mesh_platform.contracts import conform
from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.governance.audit import publish_metadata, read_metadata
from mesh_platform.io import publishing
from mesh_platform.io.lake import Lake
from mesh_platform.quality import AuditedTable
from mesh_platform.settings import MeshSettings

CONTRACT_ID = "mesh/contract_id"
PORT_MAJOR = "mesh/port_major"
COLUMNS = "mesh/columns"
CONSUMER = "mesh/consumer"
PURPOSE = "mesh/purpose"
AGGREGATE = "mesh/aggregate"


def to_pandas(table) -> pd.DataFrame:
    # Dates come back as datetime64 (not Python date objects) so pandas arithmetic just works.
    return table.to_pandas(date_as_object=False)


class MeshIOManager(dg.ConfigurableIOManager):
    """Stores products as contract-checked Parquet output ports, intermediates privately."""

    lake: str | None = None
    """Root of the lake; defaults to ``MESH_LAKE`` (or ``$MESH_HOME/lake``)."""

    domain: str | None = None
    """The domain this code location is: the consumer identity on every read it makes."""

    def _lake(self) -> Lake:
        return Lake(self.lake or MeshSettings.from_env().lake)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        domain, name = context.asset_key.path[0], context.asset_key.path[-1]
        contract_id = context.definition_metadata.get(CONTRACT_ID)
        lake = self._lake()
        if contract_id:
            contract = mesh_registry().get(contract_id, major=context.definition_metadata.get(PORT_MAJOR))
            if isinstance(obj, AuditedTable) and (obj.contract_id, obj.version) == (contract.id, contract.version):
                table = obj.table  # already conformed and quality-checked in the product's step
            else:
                table = conform(obj, contract)
            written = publishing.publish(lake, contract, table)
            full = written[0][1]
            context.add_output_metadata(
                {
                    "dagster/uri": full.uri,
                    "dagster/row_count": full.rows,
                    "mesh/bytes": sum(p.bytes for _, p in written),
                    "mesh/contract_version": contract.version,
                    **publish_metadata(contract.id, f"v{contract.major}", [v for v, _ in written], table.column_names),
                }
            )
            return
        if isinstance(obj, pd.DataFrame):
            import pyarrow as pa

            published = lake.write_table(Lake.private_path(domain, name), pa.Table.from_pandas(obj, preserve_index=False))
        else:
            published = lake.write_object(Lake.private_path(domain, name, table=False), obj)
        metadata: dict[str, Any] = {"dagster/uri": published.uri, "mesh/bytes": published.bytes}
        if published.rows is not None:
            metadata["dagster/row_count"] = published.rows
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        meta = context.definition_metadata or {}
        upstream_meta = context.upstream_output.definition_metadata if context.upstream_output else {}
        contract_id = meta.get(CONTRACT_ID) or (upstream_meta or {}).get(CONTRACT_ID)
        columns = meta.get(COLUMNS)
        lake = self._lake()
        if contract_id:
            major = meta.get(PORT_MAJOR) or (upstream_meta or {}).get(PORT_MAJOR)
            contract = mesh_registry().get(contract_id, major=major)
            consumer = self.domain or meta.get(CONSUMER) or key.path[0]
            if meta.get(AGGREGATE):
                release = publishing.read_aggregate(lake, consumer, contract, meta[AGGREGATE], context.step_context.run_id)
                context.add_input_metadata(
                    {
                        **read_metadata(consumer, contract.id, f"v{contract.major}/aggregate", release.columns, [], [], len(release.frame), meta.get(PURPOSE)),
                        "mesh/epsilon": release.epsilon,
                        "mesh/privacy_budget_remaining": release.remaining,
                    }
                )
                return release.frame
            port = publishing.read(lake, consumer, contract, columns)
            if consumer != contract.domain:
                context.add_input_metadata(
                    read_metadata(
                        consumer, contract.id, port.port, port.columns, port.decision.masked,
                        port.decision.removed, port.table.num_rows, meta.get(PURPOSE),
                    )
                )
            return to_pandas(port.table)
        domain, name = key.path[0], key.path[-1]
        table_path = Lake.private_path(domain, name)
        if lake.exists(table_path):
            return to_pandas(lake.read_table(table_path, columns=columns))
        return lake.read_object(Lake.private_path(domain, name, table=False))
