"""The one write path and the one read path of output ports; every reader goes through here.

- :func:`publish` writes the audited table as the port's ``full`` variant and, when the contract
  has sensitive columns, the ``masked`` variant that uncleared consumers read
  (``<lake>/<domain>/<product>/v<major>/masked/data.parquet``): storage holds nothing a consumer
  may not see, so storage permissions can mirror the grants (``mesh iam``).
- :func:`read` authorizes the consumer (:func:`mesh_platform.governance.access.authorize`), picks
  the variant, reads only the requested columns, and returns what the audit log needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from mesh_platform.contracts.model import Contract
from mesh_platform.governance.access import AccessDecision, AccessDenied, authorize
from mesh_platform.governance.masking import mask_table, sensitive_columns
from mesh_platform.governance.privacy import Aggregate, PrivacyLedger, Release, compute
from mesh_platform.io.lake import Lake, Published
from mesh_platform.ports import port_asset_key


@dataclass(frozen=True)
class PortRead:
    table: pa.Table
    decision: AccessDecision
    port: str
    columns: list[str]


_PREVIOUS_MAJOR = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)_v(?P<major>[0-9]+)$")


def port_contract(registry, consumer: str, producer: str, name: str, contract_id: str | None = None, major: int | None = None) -> Contract | None:
    """The contract whose output port the asset ``producer/name`` is, or None for anything else.

    What the reader's metadata says (``contract_id``, ``major``) is checked against the asset it
    reads: metadata naming one product cannot open another asset, so a private intermediate stays
    private whatever a consumer declares. ``<product>_v<N>`` is the port of a kept previous major.
    """
    if contract_id:
        current = registry.get(contract_id)
        contract = registry.get(contract_id, major=major) if major is not None else current
        if port_asset_key(contract, current.major) != dg.AssetKey([producer, name]):
            raise AccessDenied(consumer, f"{producer}/{name}", f"the read names the port of {contract.id!r} v{contract.major}, which is not this asset")
        return contract
    try:
        current = registry.get(f"{producer}/{name}")
    except LookupError:
        previous = _PREVIOUS_MAJOR.match(name)
        if previous is None:
            return None
        try:
            return registry.get(f"{producer}/{previous.group('name')}", major=int(previous.group("major")))
        except LookupError:
            return None
    return registry.get(current.id, major=major) if major not in (None, current.major) else current


def own_contract(contract: Contract, domain: str, name: str) -> Contract:
    """``contract`` if it is the port of the asset ``domain/name`` (its product, or a kept previous
    major ``<product>_v<N>``); a step never publishes under another product's contract."""
    if contract.domain != domain or name not in (contract.name, f"{contract.name}_v{contract.major}"):
        raise ValueError(f"{domain}/{name} cannot be published under the contract of {contract.id!r} v{contract.major}")
    return contract


def publish(lake: Lake, contract: Contract, table: pa.Table) -> list[tuple[str, Published]]:
    written = [("full", lake.write_table(Lake.port_path(contract.domain, contract.name, contract.major), table))]
    if sensitive_columns(contract):
        masked, _, _ = mask_table(table, contract)
        path = Lake.port_path(contract.domain, contract.name, contract.major, variant="masked")
        written.append(("masked", lake.write_table(path, masked)))
    return written


def read_aggregate(lake: Lake, consumer: str, contract: Contract, query: dict, run_id: str | None = None) -> Release:
    """A differentially private release for an aggregate-only grant; the budget is debited first."""
    import json

    aggregate = Aggregate.from_metadata(query)
    decision = authorize(consumer, contract, aggregate=True)
    budget = decision.grant.privacy
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.quotas import for_domain

    quota = for_domain(consumer, default_domains_root() / consumer).get("privacy_epsilon")
    remaining = PrivacyLedger().spend(consumer, contract.id, aggregate.epsilon, budget.epsilon, json.dumps(query, sort_keys=True), run_id, quota=quota)
    columns = aggregate.columns(budget.unit)
    table = lake.read_table(Lake.port_path(contract.domain, contract.name, contract.major), columns=columns)
    frame = compute(table.to_pandas(), contract, aggregate, budget.unit, budget.max_contributions)
    return Release(frame, aggregate.epsilon, remaining, columns)


def read(lake: Lake, consumer: str, contract: Contract, columns: list[str] | None = None) -> PortRead:
    decision = authorize(consumer, contract, columns)
    variant = "masked" if decision.variant == "masked" else "full"
    wanted = [c for c in (columns or contract.column_names) if c not in decision.removed]
    path = Lake.port_path(contract.domain, contract.name, contract.major, variant=variant)
    table = lake.read_table(path, columns=wanted)
    return PortRead(table, decision, f"v{contract.major}/{variant}", wanted)
