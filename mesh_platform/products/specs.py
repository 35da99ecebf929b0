"""What the Dagster UI shows of a product, derived once from its contract, for Python and dbt alike.

A domain declares *what* a product is (its contract and its transform, or its dbt model); the key,
group, owners, description, kinds, tags, column schema, contract metadata, code version, freshness
and automation are derived here, so every product looks the same in the UI whichever way it is
implemented. :func:`product_spec` serves :mod:`mesh_platform.products.build` and the dbt translator
(:mod:`mesh_platform.dbt.assets`); :func:`intermediate_spec` serves private intermediates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.products import partitions
from mesh_platform.products.automation import automation_condition, freshness_policy
from mesh_platform.contracts.model import Contract
from mesh_platform.storage.lake import Lake

# Classifications from least to most sensitive; a product is tagged with its most sensitive column.
CLASSIFICATION_ORDER = ("public", "internal", "confidential", "pii", "restricted")


@dataclass(frozen=True)
class Spec:
    """Everything about an asset that the UI shows, except its key, inputs and kinds."""

    tags: dict[str, str]
    metadata: dict[str, Any]
    description: str
    owners: list[str]
    freshness_policy: Any = None
    automation_condition: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def most_sensitive(classifications: list[str]) -> str | None:
    ranked = [c for c in classifications if c in CLASSIFICATION_ORDER]
    if ranked:
        return max(ranked, key=CLASSIFICATION_ORDER.index)
    return classifications[0] if classifications else None


def column_schema(contract: Contract) -> dg.TableSchema:
    columns = []
    for col in contract.columns:
        tags = {"classification": col.classification} if col.classification else {}
        other = []
        if col.primary_key:
            other.append("primary key")
        if col.tags:
            other.append("tags: " + ", ".join(col.tags))
        columns.append(
            dg.TableColumn(
                name=col.name,
                type=col.logical_type or "unknown",
                description=col.description,
                constraints=dg.TableColumnConstraints(
                    nullable=not (col.required or col.primary_key),
                    unique=bool(col.unique or (col.primary_key and len(contract.primary_key) == 1)),
                    other=other,
                ),
                tags=tags,
            )
        )
    return dg.TableSchema(columns=columns)


def product_description(contract: Contract) -> str:
    d = contract.description
    parts = [(d.purpose if d and d.purpose else f"Data product {contract.id}.")]
    if d and d.usage:
        parts.append(f"**Usage:** {d.usage}")
    if d and d.limitations:
        parts.append(f"**Limitations:** {d.limitations}")
    parts.append(f"Contract `{contract.id}` v{contract.version} ({contract.status}).")
    if contract.deprecation_date:
        parts.append(f"**Deprecated:** this major is served until {contract.deprecation_date}.")
    return "\n\n".join(parts)


def how_to_consume(contract: Contract, domain_owners: list[str]) -> str:
    """The end of a product's page: the ``InputPort(...)`` line for a domain, the grant to ask for, a read for an analyst."""
    from mesh_platform.governance.masking import sensitive_columns

    level = str(contract.custom("accessLevel", "internal")).lower()
    owners = ", ".join(domain_owners) or f"the owners of {contract.domain}"
    grants = f"`domains/{contract.domain}/grants.yaml`"
    request = f"`mesh new product YOUR_DOMAIN NAME --input {contract.id}@{contract.major}` writes the request, pending until they approve it"
    if level == "public":
        access = f"**Access:** public: every domain reads it without a grant (sensitive columns masked); to read them in clear, ask {owners} for a grant in {grants}."
    elif level == "restricted":
        access = f"**Access:** restricted: ask {owners} for a grant with a purpose and an expiry in {grants}."
    else:
        access = f"**Access:** internal: ask {owners} for a grant in {grants}; {request}."
    sensitive = sensitive_columns(contract)
    variant = "masked" if sensitive else "full"
    path = Lake.port_path(contract.domain, contract.name, contract.major, variant=variant)
    columns = ", ".join(f'"{c}"' for c in contract.column_names[:3])
    more = ", ..." if len(contract.column_names) > 3 else ""
    analyst = (
        f"**Read it as an analyst** (the {variant} port"
        + (f"; {', '.join(sorted(sensitive))} pseudonymized or removed unless your grant unmasks them" if sensitive else "")
        + "):\n\n"
        f"```sql\nSELECT * FROM delta_scan('$MESH_LAKE/{path}/') LIMIT 100;  -- duckdb\n```"
    )
    return "\n\n".join([
        "### How to consume it",
        f"**From a domain**, in its `definitions.py`:\n\n```python\nInputPort(\"{contract.id}\", major={contract.major}, columns=[{columns}{more}])\n```",
        access,
        analyst,
    ])


def code_version(contract: Contract | None, code: bytes) -> str:
    """Changes when the contract file or the implementing code (``code``: its fingerprint) changes."""
    digest = hashlib.sha256()
    if contract is not None:
        digest.update((contract._digest or contract.version).encode())
    digest.update(code)
    prefix = f"{contract.version}-" if contract is not None else ""
    return prefix + digest.hexdigest()[:12]


def product_spec(domain: str, contract: Contract, owners: list[str], policies: list[str] | None, has_inputs: bool, quotas=None,
                 reads_partitioned: bool = False, read_whole: frozenset = frozenset(), refresh: str | None = None,
                 catch_up: frozenset = frozenset(), foreign: frozenset = frozenset()) -> Spec:
    """The spec of a published product (a port): from its contract, the domain's owners, the policies
    it passed and the domain's quotas (:class:`mesh_platform.governance.quotas.Quotas`)."""
    tags = {md.DOMAIN: domain, md.TYPE: "product", md.STATUS: contract.status}
    classification = most_sensitive(contract.classifications)
    if classification:
        tags[md.CLASSIFICATION] = classification
    access = contract.custom("accessLevel")
    if access:
        tags[md.ACCESS] = str(access)
    metadata: dict[str, Any] = {
        "dagster/column_schema": column_schema(contract),
        md.CONTRACT_ID: contract.id,
        md.PORT_MAJOR: contract.major,
        md.CONTRACT_VERSION: contract.version,
        md.PORT_PATH: Lake.port_path(domain, contract.name, contract.major),
    }
    if policies:
        metadata[md.POLICIES] = dg.MetadataValue.json(sorted(policies))
        tags[md.POLICIES_TAG] = "passed"
    if contract.source is not None:
        metadata[md.CONTRACT_FILE] = dg.MetadataValue.path(str(contract.source))
    if quotas is not None:
        metadata[md.QUOTAS] = dg.MetadataValue.json(quotas.as_metadata())
    layout = partitions.of(contract)
    if layout is not None:
        metadata[md.PARTITIONING] = layout.describe()
    return Spec(
        tags=tags,
        metadata=metadata,
        description=product_description(contract) + "\n\n" + how_to_consume(contract, owners),
        owners=contract.owners or owners,
        freshness_policy=freshness_policy(contract),
        automation_condition=automation_condition(contract, has_inputs, partitioned=layout is not None, reads_partitioned=reads_partitioned, read_whole=read_whole, refresh=refresh,
                                                  catch_up=catch_up, foreign=foreign),
    )


def intermediate_spec(domain: str, description: str | None, owners: list[str], private_contract: Contract | None, has_inputs: bool,
                      reads_partitioned: bool = False, read_whole: frozenset = frozenset(), refresh: str | None = None,
                      foreign: frozenset = frozenset()) -> Spec:
    """The spec of a private intermediate, classified by its private contract."""
    from mesh_platform.products import private

    tags = {md.DOMAIN: domain, md.TYPE: "intermediate"}
    metadata: dict[str, Any] = {md.PRIVATE: True}
    if private_contract is not None:
        metadata[md.PRIVATE_CONTRACT] = str(private_contract.source)
        metadata[md.CONTRACT_FILE] = dg.MetadataValue.path(str(private_contract.source))
        if private.shape(private_contract) == private.TABLE:
            metadata["dagster/column_schema"] = column_schema(private_contract)
        classification = most_sensitive(private_contract.classifications)
        if classification:
            tags[md.CLASSIFICATION] = classification
    text = (description or f"Private intermediate of the {domain} domain.") + "\n\nPrivate to its domain: not an output port, not readable by other domains."
    condition = automation_condition(None, has_inputs, partitioned=partitions.of(private_contract) is not None, reads_partitioned=reads_partitioned,
                                     read_whole=read_whole, refresh=refresh, foreign=foreign)
    return Spec(tags=tags, metadata=metadata, description=text, owners=owners, automation_condition=condition)


__all__ = ["CLASSIFICATION_ORDER", "Spec", "code_version", "column_schema", "intermediate_spec", "most_sensitive", "how_to_consume", "product_description", "product_spec"]
