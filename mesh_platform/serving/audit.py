"""Every ``mesh serve`` request in the audit log, like a Dagster read: served and refused alike.

A served read is an asset observation on the producer's asset (the port's major), with the same
metadata as an input port's read (:func:`mesh_platform.governance.audit.read_metadata`: consumer,
product, port, columns, masked, removed, rows, version) plus the bytes, the protocol, the person
the token names and, for SQL, the query's hash. A refusal is a ``denied`` observation naming the
reason. ``mesh audit`` lists both; the service writes them to the Dagster instance the deployment
configures (``DAGSTER_HOME``), one at a time.
"""

from __future__ import annotations

import hashlib
import threading

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.governance.audit import denied_metadata, read_metadata
from mesh_platform.serving.tokens import Caller

SERVED_BY = "mesh/served_by"
PERSON = "mesh/person"
QUERY_HASH = "mesh/query_hash"
UNKNOWN = dg.AssetKey(["mesh_serve", "requests"])  # where refusals that name no product are recorded


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


class Auditor:
    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self._lock = threading.Lock()

    def _log(self, key: dg.AssetKey, metadata: dict) -> None:
        with self._lock:
            self.instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, metadata=metadata))

    def served(self, key: dg.AssetKey, caller: Caller, contract_id: str, port: str, columns: list[str], masked: list[str],
               removed: list[str], rows: int, nbytes: int, version: int | None, protocol: str, query: str | None = None,
               outcome: str = "") -> None:
        meta = read_metadata(caller.domain, contract_id, port, columns, masked, removed, rows, f"mesh serve ({protocol})", version)
        meta.update({md.BYTES: nbytes, SERVED_BY: f"mesh serve ({protocol})", PERSON: caller.subject})
        if query is not None:
            meta[QUERY_HASH] = query_hash(query)
        if outcome:
            meta[md.REASON] = outcome
        self._log(key, meta)

    def denied(self, key: dg.AssetKey | None, consumer: str | None, target: str, reason: str, protocol: str,
               columns: list[str] | None = None, query: str | None = None, person: str | None = None) -> None:
        meta = denied_metadata(consumer, target, reason, columns)
        meta[SERVED_BY] = f"mesh serve ({protocol})"
        if person:
            meta[PERSON] = person
        if query is not None:
            meta[QUERY_HASH] = query_hash(query)
        self._log(key or UNKNOWN, meta)


__all__ = ["Auditor", "query_hash"]
