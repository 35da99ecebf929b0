"""Classification-driven masking: what consumers without clearance see of sensitive columns.

Columns classified ``pii`` or ``restricted`` are *sensitive*. For a consumer not cleared for a
column's classification, the column is, as its contract says (property ``customProperties:
masking``):

- ``pseudonymize`` (default for ``pii``): replaced by a keyed hash (HMAC-SHA256, hex). The same
  value always gives the same pseudonym, so joins and group-bys across products still work, but the
  value cannot be recovered or guessed by hashing candidates without the key;
- ``remove`` (default for ``restricted``, e.g. free text): dropped from the port.

The key comes from ``MESH_MASKING_KEY``. Without it, a random key is created once per mesh home
(``masking.key`` in the home the caller passes: the IO manager's, configured from its code
location's settings) for local use; with ``MESH_ENV=production`` a missing key is an error, never
a constant.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mesh_platform.contracts.model import Contract, SchemaProperty
from mesh_platform.foundations.launch_env import started_with

SENSITIVE = ("pii", "restricted")
DEFAULT_TREATMENT = {"pii": "pseudonymize", "restricted": "remove"}
PREFIX = "pseud:"


class MaskingKeyMissing(RuntimeError):
    pass


def masking_key(home: str | Path | None = None) -> bytes:
    """The pseudonymization key: ``MESH_MASKING_KEY``, else (not in production) the one kept in the
    mesh's ``home`` (the IO manager's configured home, from the code location's settings)."""
    # as the process was started: a key a domain's code sets later would make every pseudonym the
    # process writes computable by that domain (a dictionary of names or emails under a known key)
    configured = started_with("MESH_MASKING_KEY")
    if configured:
        return configured.encode()
    if (started_with("MESH_ENV") or "").lower() == "production":  # not as domain code may have set it since
        raise MaskingKeyMissing("MESH_MASKING_KEY must be set in production (the pseudonymization key)")
    if home is None:
        raise MaskingKeyMissing("no masking key: MESH_MASKING_KEY is not set and no mesh home was given to keep a local key in "
                                "(configure the IO manager's home, as Domain.definitions does)")
    path = Path(home) / "masking.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_text().strip().encode()


def treatment(col: SchemaProperty) -> str | None:
    """How ``col`` is masked for uncleared consumers (None: it is not sensitive)."""
    if col.classification not in SENSITIVE:
        return None
    chosen = str(col.custom("masking", DEFAULT_TREATMENT[col.classification])).lower()
    if chosen not in ("pseudonymize", "remove"):
        raise ValueError(f"column {col.name!r}: masking must be pseudonymize or remove, got {chosen!r}")
    return chosen


def needs_key(contracts) -> bool:
    """Whether a domain with these contracts (products and private ones) pseudonymizes anything, and so
    needs the masking key. Only such a domain's deployment gets it: a domain holding the key could hash
    a list of names or emails and so undo the pseudonyms other domains publish."""
    return any(treatment(col) == "pseudonymize" for contract in contracts for col in contract.columns)


def sensitive_columns(contract: Contract) -> dict[str, str]:
    return {c.name: c.classification for c in contract.columns if c.classification in SENSITIVE}


def pseudonymize(values: pa.ChunkedArray | pa.Array, key: bytes) -> pa.Array:
    """Keyed hash of every value (as text); nulls stay null. Hashes each distinct value once."""
    encoded = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    dictionary = encoded.dictionary.cast(pa.string()) if not pa.types.is_string(encoded.dictionary.type) else encoded.dictionary
    hashed = pa.array(
        [PREFIX + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32] for v in dictionary.to_pylist()],
        type=pa.string(),
    )
    return pc.take(hashed, encoded.indices)


def mask_table(table: pa.Table, contract: Contract, key: bytes | None = None, home: str | Path | None = None) -> tuple[pa.Table, list[str], list[str]]:
    """The masked variant of a product's table: (table, pseudonymized columns, removed columns).

    The key is read only when a column is pseudonymized: a domain that only removes columns is not
    given the key by its deployment (:func:`needs_key`), and must not need one. ``home``: the mesh
    home whose local key is used when ``MESH_MASKING_KEY`` is not set (:func:`masking_key`)."""
    pseudonymized, removed = [], []
    for col in contract.columns:
        how = treatment(col)
        if how is None or col.name not in table.column_names:
            continue
        if how == "remove":
            table = table.drop_columns([col.name])
            removed.append(col.name)
        else:
            key = key or masking_key(home)
            index = table.column_names.index(col.name)
            table = table.set_column(index, pa.field(col.name, pa.string()), pseudonymize(table.column(col.name), key))
            pseudonymized.append(col.name)
    return table, pseudonymized, removed
