"""Input ports: a product's declared dependency on another domain's published product.

A port names the producer's product by contract id (``"policies.policies"``) or asset key path
(``"policies/policies"``), pins the contract's major version, and lists the columns the consumer
needs. Resolving a port against the mesh's contract registry yields what the platform needs to wire
Dagster (the external ``AssetSpec`` of the producer's asset and the ``AssetIn`` of the consumer) and
fails at definitions load, with a clear message, when the product is unknown, the major does not
match or a column does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import ContractRegistry, MajorNotServed
from mesh_platform.governance.privacy import Aggregate
from mesh_platform.governance.privacy import validate as validate_aggregate
from mesh_platform.foundations.metadata import AGGREGATE, CONSUMER, CONTRACT_ID, DOMAIN, LOOKUP, PORT_MAJOR, PORT_PATH, PURPOSE, READ_FOR, TYPE
from mesh_platform.foundations.metadata import CONSUMER_COLUMNS as COLUMNS
from mesh_platform.storage.lake import Lake
from mesh_platform.products.partitions import of as partitioning_of


@dataclass(frozen=True)
class InputPort:
    """Consume another domain's product: ``InputPort("policies.policies", major=1, columns=[...])``."""

    product: str
    major: int
    columns: tuple[str, ...] | None = None
    purpose: str | None = None
    aggregate: Aggregate | None = None
    partitions: Any = None
    lookup: str | None = None

    def __init__(
        self,
        product: str,
        major: int,
        columns: list[str] | tuple[str, ...] | None = None,
        purpose: str | None = None,
        aggregate: Aggregate | None = None,
        partitions: Any = None,
        lookup: str | None = None,
    ):
        """``partitions``: which days of a daily-partitioned product a partitioned consumer reads
        for each of its days: None (the same day), :class:`mesh_platform.products.partitions.Window` (days
        before/after) or :data:`mesh_platform.products.partitions.ALL`. An unpartitioned consumer reads all.

        ``lookup``: a key column; the step then gets a :class:`mesh_platform.storage.lookup.Lookup`
        instead of the table, and reads the rows it needs by key (``policies.rows(claims["policy_id"])``):
        a product joining a day's few thousand claims to a book of 1.5M policies reads those
        policies only, not the book (docs/ports.md, "Lookups")."""
        object.__setattr__(self, "product", product)
        object.__setattr__(self, "major", int(major))
        object.__setattr__(self, "columns", tuple(columns) if columns is not None else None)
        object.__setattr__(self, "purpose", purpose)
        object.__setattr__(self, "aggregate", aggregate)
        object.__setattr__(self, "partitions", partitions)
        object.__setattr__(self, "lookup", lookup)


def port_asset_key(contract: Contract, current_major: int) -> dg.AssetKey:
    """The asset that publishes ``contract``'s port: the product itself, or ``<name>_v<major>`` for a previous major."""
    if contract.major == current_major:
        return dg.AssetKey([contract.domain, contract.name])
    return dg.AssetKey([contract.domain, f"{contract.name}_v{contract.major}"])


@dataclass(frozen=True)
class ResolvedPort:
    port: InputPort
    contract: Contract
    current_major: int

    @property
    def key(self) -> dg.AssetKey:
        return port_asset_key(self.contract, self.current_major)

    def deprecation(self, where: str) -> str | None:
        """A warning when this port pins a previous major that goes away (``mesh validate`` shows
        it; after the date the port no longer resolves and the consumer fails to load)."""
        if self.contract.major == self.current_major:
            return None
        until = f"until {self.contract.deprecation_date}" if self.contract.deprecation_date else "for now, with no date set"
        return (f"{where} pins major {self.contract.major} of {self.contract.id}, which is deprecated: served {until}; "
                f"move to major {self.current_major}")

    @property
    def columns(self) -> list[str]:
        return list(self.port.columns) if self.port.columns is not None else self.contract.column_names

    def asset_in(self, consumer: str, read_for: str | None = None) -> dg.AssetIn:
        """``read_for``: the consumer's asset and input (``"claim_features.claims"``), recorded with each
        audited read so the contract gate can name the reader that read (docs/versions.md)."""
        metadata = {CONTRACT_ID: self.contract.id, PORT_MAJOR: self.port.major, COLUMNS: self.columns, CONSUMER: consumer}
        if read_for:
            metadata[READ_FOR] = read_for
        if self.port.aggregate is not None:
            metadata[AGGREGATE] = self.port.aggregate.as_metadata()
        if self.port.purpose:
            metadata[PURPOSE] = self.port.purpose
        if self.port.lookup is not None:
            metadata[LOOKUP] = self.port.lookup
        mapping = self.port.partitions.mapping() if self.port.partitions is not None else None
        return dg.AssetIn(key=self.key, metadata=metadata, partition_mapping=mapping)

    def external_spec(self) -> dg.AssetSpec:
        """How the producer's asset appears in the consumer's code location (an edge in the mesh)."""
        c = self.contract
        return dg.AssetSpec(
            key=self.key,
            group_name=c.domain,
            description=f"Output port v{self.port.major} of `{c.id}`, published by the {c.domain} domain.",
            owners=c.owners or None,
            tags={DOMAIN: c.domain, TYPE: "product"},
            metadata={CONTRACT_ID: c.id, PORT_PATH: Lake.port_path(c.domain, c.name, self.port.major)},
            partitions_def=layout.definition if (layout := partitioning_of(c)) is not None else None,
        )


def resolve(port: InputPort, registry: ContractRegistry, consumer_domain: str) -> ResolvedPort:
    """Resolve one port; raises ``LookupError``/``ValueError`` with a message for the consumer."""
    current = registry.get(port.product)
    if current.domain == consumer_domain:
        raise ValueError(
            f"{port.product!r} belongs to this domain; depend on it by name instead of through an input port"
        )
    try:
        contract = registry.get(port.product, major=port.major)
    except MajorNotServed as exc:
        raise ValueError(f"pins major version {port.major} of {current.id!r}, but {exc.reason}") from None
    if port.aggregate is not None:
        if port.columns is not None:
            raise ValueError("an aggregate port takes its columns from its query; do not list columns")
        try:
            validate_aggregate(port.aggregate, contract)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"aggregate query on {contract.id!r}: {str(exc).strip(chr(34))}") from None
    if port.lookup is not None:
        if port.aggregate is not None:
            raise ValueError("an aggregate port releases aggregates, not rows: it cannot be read by key (lookup)")
        if port.lookup not in (port.columns if port.columns is not None else contract.column_names):
            raise ValueError(f"lookup key {port.lookup!r} is not among the columns it reads of {contract.id!r}")
    if port.columns is not None:
        unknown = [c for c in port.columns if c not in contract.column_names]
        if unknown:
            raise ValueError(
                f"asks {contract.id!r} for columns it does not publish: {', '.join(unknown)} "
                f"(it publishes {', '.join(contract.column_names)})"
            )
    return ResolvedPort(port, contract, current.major)
