"""Who reads each product of the mesh, column by column: the readers a contract change is judged by.

Three kinds of evidence, each named on every reader it yields:

- **input port**: a product (or private asset) of another domain declares an input port on it,
  with the columns it asks for (all of them when it lists none; an aggregate port reads the
  columns of its query). These are the mesh's promises: they hold whether or not anything ran.
- **dbt model**: a model of a dbt domain reads a source that is the product; its columns are those
  the model's SQL uses (:mod:`mesh_platform.dbt.sql_lineage`), narrower than what the source
  declares. When the SQL cannot be analysed the source's declared columns stand in, and the reader
  says why.
- **audit**: what consumers actually read, from the audit log in the Dagster instance
  (``mesh/columns_read`` of every read, :mod:`mesh_platform.governance.audit`) over a window,
  30 days by default, with the last read and the table version it read. A read records the asset
  and input that made it (``mesh/read_for``): the declared reader it came from gets that last read
  and version; a read no declared reader accounts for (a port changed since, ``mesh serve``) is a
  reader of its own.

Evidence that cannot be gathered is a **gap**, kept with its reason: a domain that does not load
(its ports are unknown), an instance that cannot be opened. A gap never makes a change look safe;
the contract gate (:mod:`mesh_platform.contracts.impact`) turns it into "possibly breaking".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable

import dagster as dg

from mesh_platform.contracts.impact import Reader
from mesh_platform.dbt.sql_lineage import SqlNotAnalysable
from mesh_platform.governance.audit import audit_records

if TYPE_CHECKING:
    from mesh_platform.contracts.registry import ContractRegistry
    from mesh_platform.mesh.workspace import Mesh

WINDOW_DAYS = 30
_PORT_MAJOR = re.compile(r"^v(\d+)")
_SHIM = re.compile(r"^(?P<name>.+)_v(?P<major>\d+)$")


@dataclass
class Readers:
    """The readers of one product (every major), and what could not be looked at."""

    product: str
    readers: list[Reader] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"product": self.product, "readers": [asdict(r) for r in self.readers], "gaps": list(self.gaps)}


def _declared(mesh: "Mesh", products: set[str], found: dict[str, Readers], gaps: list[str]) -> dict[str, list[str]]:
    """Readers from the loaded domains' input ports and dbt models; returns owners per domain."""
    owners: dict[str, list[str]] = {}
    for loaded in mesh.domains:
        domain = loaded.domain
        plan = domain.last_plan if domain is not None else None
        if plan is None or loaded.problems:
            first = loaded.problems[0] if loaded.problems else "it has no plan"
            gaps.append(f"domain {loaded.entry.location} did not load, so the ports it reads are unknown ({first})")
            if plan is None:
                continue
        owners[domain.name] = list(domain.descriptor.owners)
        for product in plan.products:
            if product.declaration.is_shim:
                continue
            for param, port in product.ports.items():
                if port.contract.id not in products:
                    continue
                aggregate = port.port.aggregate
                columns = aggregate.columns("") if aggregate is not None else (list(port.port.columns) if port.port.columns is not None else None)
                found[port.contract.id].readers.append(Reader(
                    consumer=domain.name, asset=product.name, port=param, major=port.port.major,
                    columns=[c for c in columns if c] if columns is not None else None, via="input port",
                    owners=owners[domain.name],
                ))
        if plan.dbt is None:
            continue
        for model, ports in plan.dbt.model_ports.items():
            wanted = [p for p in ports.values() if p.contract.id in products]
            if not wanted:
                continue
            note, used = "", None
            try:
                used = plan.dbt.model_columns(model).reads
            except SqlNotAnalysable as exc:
                note = f"the columns its source declares: {exc}"
            for port in wanted:
                columns = used.get(port.contract.id, []) if used is not None else port.columns
                found[port.contract.id].readers.append(Reader(
                    consumer=domain.name, asset=model, port=f"source {port.contract.id}", major=port.port.major,
                    columns=list(columns), via="dbt model", owners=owners[domain.name], note=note,
                ))
    return owners


def _audited(instance: dg.DagsterInstance, products: dict[str, tuple[str, str]], window_days: int, now: datetime,
             owners: dict[str, list[str]], found: dict[str, Readers]) -> None:
    """Readers from the audit log: every read of the products' ports (any major) within the window."""
    since = (now - timedelta(days=window_days)).isoformat(timespec="milliseconds")
    wanted: list[dg.AssetKey] = []
    for key in instance.get_asset_keys():
        if len(key.path) != 2:
            continue
        domain, name = key.path
        shim = _SHIM.match(name)
        if (domain, name) in products.values() or (shim and (domain, shim.group("name")) in products.values()):
            wanted.append(key)
    by_reader: dict[tuple[str, str, str, str], Reader] = {}
    for record in sorted(audit_records(instance, wanted), key=lambda r: r.time):
        if record.kind != "read" or record.time < since or record.consumer is None:
            continue
        contract_id = record.product if record.product in products else None
        if contract_id is None:
            continue
        declared = _declared_readers(found[contract_id].readers, record)
        if declared:  # a declared port or dbt source that read: its last read goes with it
            for reader in declared:
                if reader.columns is not None:
                    reader.columns = sorted(set(reader.columns) | set(record.columns))
                reader.last_read, reader.version_read = record.time, record.version
            continue
        major = _PORT_MAJOR.match(record.port or "")
        asset, param = _asset_input(record.read_for) or ("", "")
        key = (contract_id, record.consumer, record.port, record.read_for)
        reader = by_reader.get(key)
        if reader is None:
            reader = by_reader[key] = Reader(
                consumer=record.consumer, asset=asset, port=param or record.port, major=int(major.group(1)) if major else None,
                columns=[], via="audit", owners=owners.get(record.consumer, []),
            )
            found[contract_id].readers.append(reader)
        reader.columns = sorted(set(reader.columns or []) | set(record.columns))
        reader.last_read, reader.version_read = record.time, record.version


def _declared_readers(readers: list[Reader], record) -> list[Reader]:
    """The declared readers an audited read came from (its ``read_for``): the input port of that
    asset, or every model of that dbt source (the run stages a source once for all its models).
    Nothing for a read without ``read_for`` (older records, ``mesh serve``): it is a reader of its own."""
    if record.read_for.startswith(_DBT_SOURCE):
        port = "source " + record.read_for.removeprefix(_DBT_SOURCE)
        return [r for r in readers if r.via == "dbt model" and r.consumer == record.consumer and r.port == port]
    found = _asset_input(record.read_for)
    if found is None:
        return []
    asset, param = found
    return [r for r in readers if r.via == "input port" and r.consumer == record.consumer and r.asset == asset and r.port == param]


_DBT_SOURCE = "dbt source "


def _asset_input(read_for: str) -> tuple[str, str] | None:
    """The consumer's asset and input of a ``read_for`` (``"claim_features.claims"``); None for a dbt
    source or a read that recorded none."""
    if not read_for or read_for.startswith(_DBT_SOURCE):
        return None
    asset, _, param = read_for.rpartition(".")
    return asset, param


def find_readers(
    mesh: "Mesh",
    products: Iterable[str],
    registry: "ContractRegistry",
    instance: dg.DagsterInstance | None,
    window_days: int = WINDOW_DAYS,
    now: datetime | None = None,
) -> dict[str, Readers]:
    """Every known reader of each product (contract id), and the gaps in that knowledge.

    ``instance``: the Dagster instance whose audit log to read; None (no instance) is a gap."""
    wanted = set(products)
    found = {product: Readers(product) for product in wanted}
    gaps: list[str] = []
    owners = _declared(mesh, wanted, found, gaps)
    if instance is None:
        gaps.append("no Dagster instance was given, so the audit log of actual reads was not consulted")
    else:
        keys = {}
        for product in wanted:
            try:
                contract = registry.get(product)
            except LookupError:
                continue
            keys[product] = (contract.domain, contract.name)
        try:
            _audited(instance, keys, window_days, now or datetime.now(timezone.utc), owners, found)
        except Exception as exc:  # an unreadable instance: the verdict degrades, the gate goes on
            gaps.append(f"the audit log could not be read ({type(exc).__name__}: {exc})")
    for readers in found.values():
        readers.gaps.extend(gaps)
    return found


__all__ = ["Readers", "WINDOW_DAYS", "find_readers"]
