"""Data products and private intermediates, built into Dagster assets from their contracts.

A domain only declares *what* a product is (its contract file and its transform); everything a
Dagster user sees on the asset (key, group, owners, description, kinds, tags, column schema,
contract id and version, code version) is derived here, so no domain hand-writes that metadata and
every product looks the same in the UI.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from mesh_platform.automation import automation_condition, freshness_policy
from mesh_platform.contracts.model import Contract
from mesh_platform.io.io_manager import COLUMNS, CONTRACT_ID, PORT_MAJOR, PRIVATE_CONTRACT
from mesh_platform.io.lake import Lake
from mesh_platform.ports import InputPort, ResolvedPort
from mesh_platform import private, quarantine
from mesh_platform.quality import audit, check_specs
from mesh_platform.settings import MeshSettings

# Classifications from least to most sensitive; a product is tagged with its most sensitive column.
CLASSIFICATION_ORDER = ("public", "internal", "confidential", "pii", "restricted")
MAX_KINDS = 3  # Dagster shows at most three kinds per asset


@dataclass
class Declaration:
    """What a domain declares with ``@domain.product`` or ``@domain.asset``."""

    name: str
    fn: Callable[..., Any]
    inputs: dict[str, InputPort | str] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    required_resource_keys: frozenset[str] = frozenset()
    is_product: bool = True
    description: str | None = None
    declared_in: str | None = None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def wants_context(self) -> bool:
        return "context" in inspect.signature(self.fn).parameters


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
    return "\n\n".join(parts)


def _code_fingerprint(code) -> bytes:
    """What a function does, without where it sits in its file (moving it keeps its version)."""
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        parts.append(_code_fingerprint(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(parts)


def code_version(decl: Declaration, contract: Contract | None) -> str:
    """Changes when the contract file or the transform's code changes."""
    digest = hashlib.sha256()
    if contract is not None:
        digest.update((contract._digest or contract.version).encode())
    code = getattr(decl.fn, "__code__", None)
    digest.update(_code_fingerprint(code) if code is not None else decl.fn.__qualname__.encode())
    prefix = f"{contract.version}-" if contract is not None else ""
    return prefix + digest.hexdigest()[:12]


def _kinds(decl: Declaration) -> set[str]:
    kinds = ["pandas"] + [k for k in decl.kinds if k != "pandas"]
    kinds = kinds[: MAX_KINDS - 1] + ["parquet"] if decl.is_product else kinds[:MAX_KINDS]
    return set(kinds)


def _compute_fn(domain: str, decl: Declaration, contract: Contract | None):
    """The step: run the transform, quarantine what it rejected, audit and hand the rest to the IO manager."""
    wants_context = decl.wants_context
    fn = decl.fn
    key = dg.AssetKey([domain, decl.name])
    same_domain = [dg.AssetKey([domain, s]) for s in decl.inputs.values() if isinstance(s, str)]

    def screen(context, data):
        """Unwrap :class:`Screened` results; store and audit their rejected rows (an event per step)."""
        if not isinstance(data, quarantine.Screened):
            return data, quarantine.Held(key, {}, None), False
        held = quarantine.store(Lake(MeshSettings.from_env().lake), key, context.run.run_id, data.rejections)
        return data.data, held, True

    if contract is None:

        def compute(context, **inputs):
            data = fn(context, **inputs) if wants_context else fn(**inputs)
            data, held, screened = screen(context, data)
            if held.total:
                yield quarantine.audit_event(held, key.to_user_string())
            yield dg.Output(data, metadata=quarantine.output_metadata(held, "intermediate") if screened else {})

    else:

        def compute(context, **inputs):
            data = fn(context, **inputs) if wants_context else fn(**inputs)
            data, held, _ = screen(context, data)
            if held.total:
                yield quarantine.audit_event(held, contract.id)
            upstream = quarantine.carried(context.instance, same_domain)
            verdict = quarantine.judge(f"{domain}/{decl.name}", contract.quarantine_limits, quarantine.rows_of(data), held, upstream)
            yield verdict.result
            audited, metadata = yield from audit(context, contract, data)
            if verdict.failed:
                raise quarantine.QuarantineLimitExceeded(f"{domain}/{decl.name}", verdict.message)
            metadata.update(quarantine.output_metadata(quarantine.Held(key, verdict.counts, held.uri), "product"))
            yield dg.Output(audited, metadata=metadata)

    compute.__name__ = decl.name
    return compute


def build_asset(
    domain: str,
    decl: Declaration,
    contract: Contract | None,
    ports: dict[str, ResolvedPort],
    owners: list[str],
    policies: list[str] | None = None,
    private_contract: Contract | None = None,
) -> dg.AssetsDefinition:
    """One Dagster asset for a product (``contract`` given) or a private intermediate (``None``,
    classified by its ``private_contract``: see :mod:`mesh_platform.private`)."""
    ins: dict[str, dg.AssetIn] = {}
    for param, source in decl.inputs.items():
        if isinstance(source, InputPort):
            ins[param] = ports[param].asset_in(domain)
        else:
            ins[param] = dg.AssetIn(key=dg.AssetKey([domain, source]))

    if contract is not None:
        classification = most_sensitive(contract.classifications)
        tags = {"mesh/domain": domain, "mesh/type": "product", "mesh/status": contract.status}
        if classification:
            tags["mesh/classification"] = classification
        access = contract.custom("accessLevel")
        if access:
            tags["mesh/access"] = str(access)
        metadata: dict[str, Any] = {
            "dagster/column_schema": column_schema(contract),
            CONTRACT_ID: contract.id,
            PORT_MAJOR: contract.major,
            "mesh/contract_version": contract.version,
            "mesh/port_path": Lake.port_path(domain, contract.name, contract.major),
        }
        if policies:
            metadata["mesh/policies"] = dg.MetadataValue.json(sorted(policies))
            tags["mesh/policies"] = "passed"
        if contract.source is not None:
            metadata["mesh/contract_file"] = dg.MetadataValue.path(str(contract.source))
        description = product_description(contract)
        if contract.deprecation_date:
            description += f"\n\n**Deprecated:** this major is served until {contract.deprecation_date}."
        product_owners = contract.owners or owners
    else:
        tags = {"mesh/domain": domain, "mesh/type": "intermediate"}
        metadata = {"mesh/private": True}
        if private_contract is not None:
            metadata[PRIVATE_CONTRACT] = str(private_contract.source)
            metadata["mesh/contract_file"] = dg.MetadataValue.path(str(private_contract.source))
            if private.shape(private_contract) == private.TABLE:
                metadata["dagster/column_schema"] = column_schema(private_contract)
            classification = most_sensitive(private_contract.classifications)
            if classification:
                tags["mesh/classification"] = classification
        description = (decl.description or (decl.fn.__doc__ or "").strip() or f"Private intermediate of the {domain} domain.")
        description += "\n\nPrivate to its domain: not an output port, not readable by other domains."
        product_owners = owners

    key = dg.AssetKey([domain, decl.name])
    return dg.asset(
        key=key,
        ins=ins,
        group_name=domain,
        owners=product_owners or None,
        description=description,
        kinds=_kinds(decl),
        tags=tags,
        metadata=metadata,
        code_version=code_version(decl, contract),
        required_resource_keys=set(decl.required_resource_keys) or None,
        check_specs=check_specs(key, contract) if contract is not None else None,
        freshness_policy=freshness_policy(contract) if contract is not None else None,
        automation_condition=automation_condition(contract, bool(decl.inputs)),
    )(_compute_fn(domain, decl, contract))


__all__ = ["COLUMNS", "CLASSIFICATION_ORDER", "Declaration", "build_asset", "column_schema"]
