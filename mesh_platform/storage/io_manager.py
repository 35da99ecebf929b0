"""The IO manager every domain gets: contract-enforced, atomic publishing to the lake.

Output ports are Delta tables (:mod:`mesh_platform.storage.delta`): a publish is one commit, recorded on
the materialization (``mesh/delta_version``); a read reads the version the producer's latest
materialization recorded, or, in a run tagged ``mesh/replay_of``, the version the replayed run read
(:mod:`mesh_platform.storage.versions`), and records it in the audit log.

Write path (a product materializes): the product's step hands over an
:class:`~mesh_platform.quality.checks.AuditedTable`, already conformed to the contract of the product's
plan and quality-checked, which carries that contract: it is published as it is (written to a
staging file and renamed over the port's last good version), with no parsing or look-up. A private
intermediate arrives as :class:`~mesh_platform.products.private.Kept` with its private contract. The
materialization records ``dagster/uri``, row count, bytes and the contract version.

Read path: every read, of an output port or of anything else in the lake, goes through one access
decision (:func:`mesh_platform.governance.access.authorize_asset`) for the domain the step runs as,
bound by the platform (:mod:`mesh_platform.governance.identity`), never taken from configuration or
metadata. Another domain's private intermediate is never readable; a refused read is audited
before the step fails. Only the columns the consumer declared are read from the Parquet file.

For reads, the port's contract is looked up in the mesh's registry from the input's metadata
(``mesh/contract_id``) and checked against the asset read. An asset built around the declarations (a
plain ``@dg.asset`` with this IO manager) is published under the registry's contract named in its
metadata, or refused when it has none. The IO manager holds no per-domain state and can be
configured like any Dagster resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from mesh_platform.foundations import metadata as md
from mesh_platform.products import partitions, private
from mesh_platform.contracts import conform
from mesh_platform.contracts.enforcement import check_key
from mesh_platform.contracts.loader import load_contract
from mesh_platform.contracts.registry import mesh_registry
from mesh_platform.governance.access import AccessDenied, authorize_asset
from mesh_platform.governance.audit import denied_metadata, log_observation, publish_metadata, read_metadata
from mesh_platform.governance.identity import IdentityError, domain_of_step
from mesh_platform.storage import delta, gate, publishing, versions
from mesh_platform.storage.lake import Lake, name_part
from mesh_platform.storage.lookup import Lookup
from mesh_platform.foundations.metadata import AGGREGATE, BYTES, CONSUMER_COLUMNS, CONTRACT_ID, CONTRACT_VERSION, PORT_MAJOR, PRIVATE_CONTRACT, PURPOSE, READ_FOR
from mesh_platform.quality.checks import AuditedTable


def _partition_keys(context: dg.OutputContext) -> list[str] | None:
    """The days a partitioned step writes (None for an unpartitioned asset)."""
    return list(context.asset_partition_keys) if context.has_asset_partitions else None


def _partition_rows(rows: int, table_rows: int, keys: list[str]) -> dict[str, Any]:
    """What a partition publish records about rows, so that the asset page does not mislead.

    ``dagster/row_count`` keeps Dagster's meaning, the rows of this materialization: the rows the
    run published on its days (Dagster gives every day of a run the same output metadata). It stays
    so because ``mesh usage``, ``mesh quotas``, ``mesh audit``, OpenLineage's output statistics and
    Dagster's own tools read it as the rows written; a whole-table count there would make a one-day
    run look like it wrote the table. The asset page shows it as "Row count", which after a one-day
    run of a 600-row table reads "25": so the whole table's rows are recorded next to it under a
    label a person reads (``Table rows (all days)``, and ``mesh/table_rows`` for programs, what
    ``mesh catalog`` shows), and ``Row count covers`` names the days the row count is about.
    """
    days = partitions.describe_keys(keys)
    return {
        md.TABLE_ROWS: table_rows,
        md.TABLE_ROWS_LABEL: dg.MetadataValue.int(table_rows),
        md.ROW_COUNT_COVERS: dg.MetadataValue.text(
            f"this run's {len(keys)} day(s) ({days}): {rows:,} row(s); the whole table holds {table_rows:,} ({md.TABLE_ROWS_LABEL})"),
    }


def _window(context: dg.InputContext) -> tuple[str, str] | None:
    """The days of a partitioned upstream this input reads, as (first, last) partition keys; None
    when it reads every day (an unpartitioned consumer, or :data:`mesh_platform.products.partitions.ALL`)."""
    if context._step_context is None or not context.has_asset_partitions:
        return None
    keys = context.asset_partition_keys
    if not keys:
        return None
    definition = context.asset_partitions_def
    if definition is not None and len(keys) >= len(definition.get_partition_keys()):
        return None
    return min(keys), max(keys)


def _record_read(context: dg.InputContext, metadata: dict) -> None:
    """The audit record of a read, as input metadata; a read of several days of a partitioned port
    is recorded as one observation of the port (Dagster's input metadata takes one partition)."""
    if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
        log_observation(context.step_context, context.asset_key, metadata)
    else:
        context.add_input_metadata(metadata)


def to_pandas(table) -> pd.DataFrame:
    # Dates come back as datetime64 (not Python date objects) so pandas arithmetic just works.
    return table.to_pandas(date_as_object=False)


def mesh_key(key: dg.AssetKey, action: str) -> tuple[str, str]:
    """(domain, asset) of a mesh asset key: exactly two plain names. Anything else (``..``, ``/``, an
    empty part, more parts) could name a path outside the domain's folder, and is refused."""
    if len(key.path) != 2:
        raise ValueError(f"cannot {action} {key.to_user_string()!r}: a mesh asset key is <domain>/<asset>, two parts")
    try:
        return name_part(key.path[0], "domain"), name_part(key.path[1], "asset")
    except ValueError as exc:
        raise ValueError(f"cannot {action} {key.to_user_string()!r}: {exc}") from None


class MeshIOManager(dg.ConfigurableIOManager):
    """Stores products as contract-checked Parquet output ports, intermediates privately."""

    lake: str | None = None
    """Root of the lake. ``Domain.definitions`` configures it with its code location's settings
    (``MESH_LAKE``, or ``$MESH_HOME/lake``); the IO manager never reads the environment for it."""

    home: str | None = None
    """The mesh home (configured by ``Domain.definitions``): where the local masking key and privacy
    ledger live when the deployment sets neither ``MESH_MASKING_KEY`` nor ``MESH_PRIVACY_LEDGER``."""

    domain: str | None = None
    """The domain the platform built this IO manager for. Not an identity: every step runs as the
    domain bound from its deployment or code location, and a step whose bound domain differs from
    this one is refused (an IO manager configured as another domain cannot read as it)."""

    def _lake(self) -> Lake:
        if not self.lake:
            raise ValueError("MeshIOManager has no lake: configure lake= (Domain.definitions configures it from its settings)")
        return Lake(self.lake)

    def _ledger(self) -> str | None:
        """The privacy ledger of this mesh's home; None: the process's ``MESH_PRIVACY_LEDGER``."""
        from mesh_platform.governance.privacy import ledger_url

        return ledger_url(self.home) if self.home else None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        domain, name = mesh_key(context.asset_key, "write")
        if context._step_context is not None:  # a step writes only its own domain's assets
            domain_of_step(context.step_context, self.domain)
        lake = self._lake()
        if isinstance(obj, AuditedTable):
            # the product's step audited it against the contract of its plan: publish that, no look-up
            contract = publishing.own_contract(obj.contract, domain, name)
            self._publish(context, lake, contract, obj.table, deferred=obj.deferred, home=self.home)
            return
        contract_id = context.definition_metadata.get(CONTRACT_ID)
        if contract_id:  # an asset built around the declarations: its contract from the registry
            contract = publishing.own_contract(mesh_registry().get(contract_id, major=context.definition_metadata.get(PORT_MAJOR)), domain, name)
            # a long table's primary key is checked while the data files are written; the commit waits for it
            overlap = bool(contract.primary_key) and isinstance(obj, pd.DataFrame) and gate.worth_overlapping(len(obj))
            table = conform(obj, contract, defer_key=overlap)
            commit_gate = gate.CommitGate(lambda: check_key(table, contract), "primary key") if overlap else None
            self._publish(context, lake, contract, table, gate=commit_gate, home=self.home)
            return
        # A private intermediate: stored only as its own private contract allows (mesh_platform.products.private).
        if isinstance(obj, private.Kept):
            obj, kept_under = obj.data, obj.contract
        else:
            where = context.definition_metadata.get(PRIVATE_CONTRACT)
            if not where:
                raise private.PrivateDataRefused(
                    f"{domain}/{name} has no contract: a private asset is declared with @domain.asset and classified "
                    f"in domains/{domain}/contracts/private/{name}.yaml; nothing was stored"
                )
            kept_under = load_contract(where)
        stored = private.at_rest(obj, private.checked(kept_under, domain, name), self.home)
        keys = _partition_keys(context)
        layout = partitions.of(kept_under) if keys is not None else None
        if layout is not None and isinstance(stored, pa.Table):
            # a partitioned intermediate is a Delta table too: a run replaces its own days only
            where = Lake.private_table_path(domain, name)
            label = f"{domain}/{name} (private)"
            partitions.check_rows(stored, layout, keys, label)
            version = delta.write(lake, where, stored, label, delta.snapshot(lake, where, label), {"mesh.partitions": partitions.describe_keys(keys)},
                                  predicate=partitions.predicate(layout, keys))
            table_rows = delta.version_rows(lake, where, version)
            context.add_output_metadata({"dagster/uri": lake.uri(where), "dagster/row_count": stored.num_rows, md.DELTA_VERSION: version,
                                         **(_partition_rows(stored.num_rows, table_rows, keys) if table_rows is not None else {})})
            return
        if isinstance(stored, pa.Table):
            published = lake.write_table(Lake.private_path(domain, name), stored)
        else:
            published = lake.write_object(Lake.private_path(domain, name, table=False), stored)
        metadata: dict[str, Any] = {"dagster/uri": published.uri, BYTES: published.bytes}
        if published.rows is not None:
            metadata["dagster/row_count"] = published.rows
        context.add_output_metadata(metadata)

    @staticmethod
    def _publish(context: dg.OutputContext, lake: Lake, contract, table, gate=None, deferred=None, home: str | None = None) -> None:
        """Publish ``table``; ``gate`` (or the audit's ``deferred`` rules) is what the commit waits for."""
        if deferred is not None:
            gate = deferred.gate
        keys = _partition_keys(context) if partitions.of(contract) is not None else None
        try:
            written = publishing.publish(lake, contract, table, keys, gate=gate, home=home)
        except BaseException:
            if deferred is not None:  # the step cannot report them any more: record them on it here
                deferred.record(context)
            raise
        full = written[0][1]
        context.add_output_metadata(
            {
                "dagster/uri": full.uri,
                "dagster/row_count": full.rows,
                BYTES: sum(p.bytes for _, p in written),
                CONTRACT_VERSION: contract.version,
                **publishing.delta_metadata(written),
                **(_partition_rows(full.rows, full.table_rows, keys) if full.table_rows is not None and keys else {}),
                **(deferred.metadata if deferred is not None else {}),
                **publish_metadata(contract.id, f"v{contract.major}", [v for v, _ in written], table.column_names),
            }
        )

    @staticmethod
    def _pinned(context: dg.InputContext, key: dg.AssetKey) -> dict[str, int] | None:
        """The versions to read (:mod:`mesh_platform.storage.versions`); None outside a run: the newest."""
        if context._step_context is None:
            return None
        step = context.step_context
        return versions.pinned(step.instance, key, step.dagster_run.tags)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        consumer: str | None = None
        columns: list[str] | None = None
        try:
            if context._step_context is None:
                # called directly, outside any run (benchmark harnesses, unit tests): only platform
                # code does that; domain code always runs inside a step and is bound below
                consumer = self.domain or key.path[0]
            else:
                consumer = domain_of_step(context.step_context, self.domain)
            return self._load(context, consumer)
        except (AccessDenied, IdentityError) as exc:
            # Audited before the step fails: who asked (the bound identity), what, and why not.
            meta = context.definition_metadata or {}
            columns = meta.get(CONSUMER_COLUMNS)
            who = consumer or (exc.domain if isinstance(exc, IdentityError) else None)
            log_observation(context.step_context, key, denied_metadata(who, key.to_user_string(), exc.reason, columns))
            raise

    @staticmethod
    def _lookup(context: dg.InputContext, lake: Lake, consumer: str, contract, columns: list[str] | None, pinned, column: str) -> Lookup:
        """The input as a :class:`~mesh_platform.storage.lookup.Lookup`: each call of its ``rows``
        is a governed read of the rows by key, audited as it happens (or its refusal)."""
        key = context.asset_key
        step = context.step_context if context._step_context is not None else None
        meta = context.definition_metadata or {}
        days = _window(context)

        def governed(window, keys, lookup: dict) -> pd.DataFrame:
            try:
                port = publishing.read(lake, consumer, contract, columns, pinned, window, keys=keys)
            except AccessDenied as exc:
                if step is not None:
                    log_observation(step, key, denied_metadata(consumer, key.to_user_string(), exc.reason, columns))
                raise
            if step is not None and consumer != contract.domain:
                log_observation(step, key, {
                    **read_metadata(consumer, contract.id, port.port, port.columns, port.decision.masked, port.decision.removed,
                                    port.table.num_rows, meta.get(PURPOSE), port.version, read_for=meta.get(READ_FOR)),
                    md.LOOKUP: dg.MetadataValue.json(lookup),
                })
            return to_pandas(port.table)

        def read(values: list) -> pd.DataFrame:
            return governed(days, (column, values), {"column": column, "keys": len(values)})

        def read_days(run_days: tuple[str, str] | None) -> pd.DataFrame:
            """The run's own days (within the window: a window reaches back from the run's days)."""
            window = days if run_days is None or days is None else (max(run_days[0], days[0]), min(run_days[1], days[1]))
            return governed(window, None, {"days": list(window) if window is not None else None})

        return Lookup(contract.id, column, read, read_days)

    def _load(self, context: dg.InputContext, consumer: str) -> Any:
        key = context.asset_key
        try:
            producer, name = mesh_key(key, "read")
        except ValueError as exc:
            raise AccessDenied(consumer, key.to_user_string(), str(exc)) from None
        meta = context.definition_metadata or {}
        upstream_meta = (context.upstream_output.definition_metadata if context.upstream_output else None) or {}
        columns = meta.get(CONSUMER_COLUMNS)
        lake = self._lake()
        contract = publishing.port_contract(
            publishing.LastPublished(mesh_registry(), lake), consumer, producer, name,
            meta.get(CONTRACT_ID) or upstream_meta.get(CONTRACT_ID),
            meta.get(PORT_MAJOR) or upstream_meta.get(PORT_MAJOR),
        )
        authorize_asset(consumer, producer, name, contract, columns, aggregate=bool(meta.get(AGGREGATE)))
        if contract is not None:
            pinned = self._pinned(context, key)
            if meta.get(AGGREGATE):
                path = Lake.port_path(contract.domain, contract.name, contract.major)
                version = (pinned or {}).get("aggregate", (pinned or {}).get("full"))
                if version is None:
                    version = delta.current_version(lake, path, publishing.port_name(contract))
                release = publishing.read_aggregate(lake, consumer, contract, meta[AGGREGATE], context.step_context.run_id, version,
                                                    ledger=self._ledger())
                _record_read(context, 
                    {
                        **read_metadata(consumer, contract.id, f"v{contract.major}/aggregate", release.columns, [], [], len(release.frame), meta.get(PURPOSE), version,
                                        read_for=meta.get(READ_FOR)),
                        md.EPSILON: release.epsilon,
                        md.PRIVACY_BUDGET_REMAINING: release.remaining,
                    }
                )
                return release.frame
            if meta.get(md.LOOKUP) is not None:
                return self._lookup(context, lake, consumer, contract, columns, pinned, meta[md.LOOKUP])
            port = publishing.read(lake, consumer, contract, columns, pinned, _window(context))
            if consumer != contract.domain:
                _record_read(context, 
                    read_metadata(
                        consumer, contract.id, port.port, port.columns, port.decision.masked,
                        port.decision.removed, port.table.num_rows, meta.get(PURPOSE), port.version, read_for=meta.get(READ_FOR),
                    )
                )
            return to_pandas(port.table)
        where = Lake.private_table_path(producer, name)
        if lake.exists(f"{where}/{delta.LOG}/{0:020d}.json"):
            kept_under = upstream_meta.get(PRIVATE_CONTRACT)
            layout = partitions.of(load_contract(kept_under)) if kept_under else None
            days = _window(context)
            filters = None
            if layout is not None and days is not None:
                filters = publishing.window_filters_for(layout, days)
            table, _ = delta.read(lake, where, f"{producer}/{name} (private)", columns, None, filters)
            return to_pandas(table)
        table_path = Lake.private_path(producer, name)
        if lake.exists(table_path):
            return to_pandas(lake.read_table(table_path, columns=columns))
        return lake.read_object(Lake.private_path(producer, name, table=False))
