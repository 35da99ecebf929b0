"""Private intermediates are classified by a contract too, and no raw PII is stored in them.

What a domain keeps for itself (``@domain.asset``) never becomes a port, but it sits in the lake
next to the ports, where an operator, a backup or a leaked credential can read it. So every private
asset has a contract of its own at ``domains/<domain>/contracts/private/<asset>.yaml`` (ODCS, like a
product's; it is not in the mesh's registry and no grant can name it) and the platform holds the
stored data to it before the first byte is written:

- a **table** (``physicalType: table``, the default) is conformed to the declared columns and types
  exactly as a port is; columns classified ``pii`` are pseudonymized with the mesh's keyed hash (the
  key of :mod:`mesh_platform.governance.masking`, so a pseudonym still joins with masked ports), or
  dropped when the column says ``masking: remove``; ``restricted`` columns (free text) are not
  allowed in a private table at all: redact the text first (:mod:`mesh_platform.foundations.text`);
- every text column stored in clear (not classified ``pii``) is scanned for email addresses and
  phone numbers (:func:`mesh_platform.foundations.text.holds_contact_details`); if any row holds one, the write
  is refused with the contract file, the column and the number of rows, and nothing is stored: the
  last good version stays;
- an **object** (``physicalType: object``, e.g. a trained model) is a mapping whose keys are the
  declared properties; nothing opaque can be pseudonymized, so no property may be ``pii`` or
  ``restricted``.

A declared private asset without a contract fails its domain's definitions (naming the missing file);
an asset built around the declarations (a plain ``@dg.asset`` with the platform's IO manager) has
no contract, and its write is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mesh_platform.contracts.loader import load_contract
from mesh_platform.contracts.model import Contract
from mesh_platform.foundations.problems import ContractError, Problem, display_path

FOLDER = "private"
TABLE, OBJECT = "table", "object"
SENSITIVE_AT_REST = ("pii", "restricted")


@dataclass(frozen=True)
class Kept:
    """What a private asset's step hands to the IO manager: the data and the contract it is kept under."""

    data: Any
    contract: Contract


class PrivateDataRefused(Exception):
    """A private write that would store unclassified data or raw PII; nothing was stored."""


def contract_path(domain_root: Path, asset: str) -> Path:
    return Path(domain_root) / "contracts" / FOLDER / f"{asset}.yaml"


def contract_files(domain_root: Path) -> list[Path]:
    folder = Path(domain_root) / "contracts" / FOLDER
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []


def shape(contract: Contract) -> str:
    return OBJECT if (contract.table.physical_type or TABLE).lower() == OBJECT else TABLE


def problems(contract: Contract) -> list[tuple[str, str]]:
    """What a private contract may not declare: (field path, problem) pairs."""
    found: list[tuple[str, str]] = []
    table = contract.table
    kind = (table.physical_type or TABLE).lower()
    if kind not in (TABLE, OBJECT):
        return [(f"schema[{table.name}].physicalType", f"a private asset is a {TABLE!r} or an {OBJECT!r}, not {table.physical_type!r}")]
    for col in table.properties:
        where = f"schema[{table.name}].properties[{col.name}].classification"
        if kind == OBJECT and col.classification in SENSITIVE_AT_REST:
            found.append((where, f"{col.classification!r} data cannot be kept in an opaque object (it cannot be pseudonymized there); keep it in a table"))
        elif kind == TABLE and col.classification == "restricted":
            found.append((where, "a private table cannot keep 'restricted' free text: redact it first (mesh_platform.foundations.text) and classify what remains"))
        elif kind == TABLE and col.classification == "pii" and str(col.custom("masking", "pseudonymize")).lower() not in ("pseudonymize", "remove"):
            found.append((where.replace("classification", "customProperties[masking]"), "masking of a private pii column is pseudonymize or remove"))
    return found


def load(domain_root: Path, domain: str, asset: str) -> Contract:
    """The contract of ``domain``'s private ``asset``; a :class:`ContractError` naming file and field."""
    path = contract_path(domain_root, asset)
    shown = display_path(path)
    if not path.exists():
        raise ContractError([Problem(shown, "", f"private asset {domain}/{asset} has no contract: classify what it keeps in this file (see docs/governance.md)")])
    return checked(load_contract(path), domain, asset)


def checked(contract: Contract, domain: str, asset: str) -> Contract:
    """``contract`` if it is a valid private contract for ``domain``/``asset``."""
    shown = display_path(contract.source) if contract.source else f"{domain}/{asset}"
    found = [Problem(shown, f, m) for f, m in problems(contract)]
    if contract.domain != domain:
        found.append(Problem(shown, "domain", f"says {contract.domain!r}, but the asset belongs to domain {domain!r}"))
    if contract.name != asset:
        found.append(Problem(shown, "name", f"says {contract.name!r}, but the private asset is {asset!r}"))
    if found:
        raise ContractError(found)
    return contract


def at_rest(obj: Any, contract: Contract, home: str | None = None) -> pa.Table | Mapping:
    """What may be stored of ``obj`` under its private ``contract``; raises :class:`PrivateDataRefused`.
    ``home``: the mesh home whose local masking key pseudonymizes pii without ``MESH_MASKING_KEY``."""
    where = display_path(contract.source) if contract.source else contract.id
    asset = f"{contract.domain}/{contract.name}"
    if shape(contract) == OBJECT:
        if isinstance(obj, pd.DataFrame) or not isinstance(obj, Mapping):
            raise PrivateDataRefused(f"{asset}: {where} declares an object (a mapping of {', '.join(contract.column_names)}), got {type(obj).__name__}")
        declared, given = contract.column_names, [str(k) for k in obj]
        missing = [k for k in declared if k not in given]
        extra = [k for k in given if k not in declared]
        if missing or extra:
            detail = "; ".join(filter(None, [missing and f"missing {', '.join(missing)}", extra and f"not declared {', '.join(extra)}"]))
            raise PrivateDataRefused(f"{asset}: the object does not match {where} ({detail}); nothing was stored")
        return obj
    if not isinstance(obj, pd.DataFrame):
        raise PrivateDataRefused(f"{asset}: {where} declares a table, got {type(obj).__name__}")
    from mesh_platform.contracts import conform
    from mesh_platform.governance.masking import masking_key, pseudonymize
    from mesh_platform.foundations.text import holds_contact_details

    table = conform(obj, contract)
    for col in contract.columns:
        if col.classification == "pii":
            continue
        if pa.types.is_string(table.schema.field(col.name).type):
            rows = int(holds_contact_details(table.column(col.name).to_pandas()).sum())
            if rows:
                raise PrivateDataRefused(
                    f"{asset}: column {col.name!r} holds email addresses or phone numbers in {rows} row(s), "
                    f"but {where} does not classify it as pii; classify it (it is then pseudonymized) or "
                    f"leave the contact details to their owner's port. Nothing was stored."
                )
    key = None
    for col in contract.columns:
        if col.classification != "pii":
            continue
        if str(col.custom("masking", "pseudonymize")).lower() == "remove":
            table = table.drop_columns([col.name])
            continue
        key = key or masking_key(home)
        index = table.column_names.index(col.name)
        table = table.set_column(index, pa.field(col.name, pa.string()), pseudonymize(table.column(col.name), key))
    return table


__all__ = ["Kept", "PrivateDataRefused", "at_rest", "checked", "contract_files", "contract_path", "load", "problems", "shape"]
