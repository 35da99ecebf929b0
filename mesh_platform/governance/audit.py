"""The audit log: every publish and every read, as Dagster events in the instance's event log.

- A **publish** is the product's materialization event; the IO manager adds ``mesh/audit:
  publish`` with the port, variants and row count.
- A **read** is an asset observation on the *producer's* asset, recorded by the IO manager when a
  consumer loads an input port (``context.add_input_metadata``): consumer, product, port and
  variant, columns, which columns were masked or removed, rows, run id.
- A **denied** read is an observation on the asset that was asked for, logged before the step
  fails: who asked (the bound identity, not what the code claimed), what, and why it was refused.

- A **quarantine** is an asset observation on the asset whose step rejected source rows
  (:mod:`mesh_platform.quality.quarantine`): rows per reason, where they are kept, run id.

All live in the Dagster instance's event log — SQLite locally, Postgres in production — so they
are durable, visible on each asset's page in the UI, and queryable: :func:`audit_records` and
``mesh audit`` read them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable

import dagster as dg

from mesh_platform.foundations import metadata as md

AUDIT = md.AUDIT


@dataclass(frozen=True)
class AuditRecord:
    kind: str  # "read" | "publish" | "denied" | "quarantine"
    time: str
    product: str
    asset_key: str
    port: str
    consumer: str | None
    columns: list[str]
    masked: list[str]
    removed: list[str]
    rows: int | None
    run_id: str
    reason: str = ""  # denied: why
    reasons: dict = field(default_factory=dict)  # quarantine: rows per reason
    version: int | None = None  # publish: the Delta version committed; read: the version read
    masked_version: int | None = None  # publish: the version of the masked variant committed with it
    read_for: str = ""  # read: the consumer's asset and input that read, when known

    def as_dict(self) -> dict:
        return asdict(self)


def read_metadata(consumer: str, contract_id: str, port: str, columns: list[str], masked: list[str], removed: list[str], rows: int, purpose: str | None,
                  version: int | None = None, read_for: str | None = None) -> dict:
    """A read's audit record; ``read_for``: the consumer's asset and input that read (see
    :data:`mesh_platform.foundations.metadata.READ_FOR`), when the read is a step's input."""
    versioned = {} if version is None else {md.DELTA_VERSION: version}
    reader = {} if not read_for else {md.READ_FOR: read_for}
    return {
        **versioned,
        **reader,
        AUDIT: "read",
        md.CONSUMER: consumer,
        md.PRODUCT: contract_id,
        md.PORT: port,
        md.COLUMNS_READ: dg.MetadataValue.json(columns),
        md.MASKED: dg.MetadataValue.json(masked),
        md.REMOVED: dg.MetadataValue.json(removed),
        md.ROWS: rows,
        md.PURPOSE: purpose or "",
    }


def denied_metadata(consumer: str | None, target: str, reason: str, columns: list[str] | None = None) -> dict:
    return {
        AUDIT: "denied",
        md.CONSUMER: consumer or "(unknown)",
        md.PRODUCT: target,
        md.REASON: reason,
        md.COLUMNS_READ: dg.MetadataValue.json(list(columns or [])),
    }


def quota_metadata(domain: str, target: str, quota: str, limit: float, would_use: float, reason: str) -> dict:
    """A publish refused by a quota (kind ``quota``)."""
    return {
        AUDIT: "quota",
        md.CONSUMER: domain,
        md.PRODUCT: target,
        md.REASON: reason,
        md.REASONS: dg.MetadataValue.json({quota: {"limit": limit, "would_use": would_use}}),
    }


def log_observation(step_context, key: dg.AssetKey, metadata: dict) -> None:
    """Write an audit observation to the run's event log now (it survives the step failing next)."""
    from dagster._core.events import DagsterEvent

    DagsterEvent.asset_observation(step_context, dg.AssetObservation(asset_key=key, metadata=metadata))


def publish_metadata(contract_id: str, port: str, variants: list[str], columns: list[str]) -> dict:
    return {
        AUDIT: "publish",
        md.PRODUCT: contract_id,
        md.PORT: port,
        md.VARIANTS: dg.MetadataValue.json(variants),
        md.COLUMNS_READ: dg.MetadataValue.json(columns),
    }


def _value(metadata, key, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


OBSERVED_KINDS = ("read", "denied", "quarantine", "quota")
READ_BY_DAYS = 30


def read_by(instance: dg.DagsterInstance, key: dg.AssetKey, days: int = READ_BY_DAYS, limit: int = 2000,
            major: int | None = None, previous: dict[int, dg.AssetKey] | None = None) -> dict:
    """``mesh/read_by`` for a publish of ``key``: each consumer that read this port (this major's
    asset) in the last ``days``, with its last read, the version it read and its columns. On a
    previous major's asset it is the list of consumers that still have to move.

    ``previous``: the previous majors still served (major -> their ``<product>_v<major>`` asset).
    Then the current product's page also gets ``mesh/read_by_major``: who read each major (``major``
    is this one's), so the producer sees on one page who still has to move.

    Incremental: the latest publish's ``mesh/read_by`` says up to which audit record it was
    worked out (``through``, the record's storage id); this one reads only the records after it
    and merges them in, dropping readers whose last read left the window. A port read every few
    minutes has thousands of reads in 30 days; reading them all again at every publish cost 0.3 s
    and more per publish, growing with the reads (2,000 records on SQLite)."""
    readers, through = _readers_of(instance, key, days, limit)
    out = {md.READ_BY: dg.MetadataValue.json({"days": days, "consumers": readers, "through": through})}
    if previous:
        majors = {f"v{major}": sorted(readers)} if major is not None else {}
        for old, old_key in sorted(previous.items()):
            majors[f"v{old}"] = sorted(_readers_of(instance, old_key, days, limit)[0])
        out[md.READ_BY_MAJOR] = dg.MetadataValue.json({"days": days, "majors": majors})
    return out


def _last_read_by(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[dict[str, dict], int | None]:
    """The consumers the latest publish of ``key`` recorded, and the audit record they were read
    through (None: work them out from the start, e.g. a publish without ``through``)."""
    found = instance.fetch_materializations(key, limit=1).records
    materialization = found[0].event_log_entry.asset_materialization if found else None
    value = _value(materialization.metadata, md.READ_BY) if materialization is not None else None
    if not isinstance(value, dict) or not isinstance(value.get("through"), int) or not isinstance(value.get("consumers"), dict):
        return {}, None
    return value["consumers"], value["through"]


def _readers_of(instance: dg.DagsterInstance, key: dg.AssetKey, days: int, limit: int) -> tuple[dict[str, dict], int | None]:
    since = datetime.now(timezone.utc).timestamp() - days * 86400
    carried, through = _last_read_by(instance, key)
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=through) if through is not None else key, limit=limit).records
    seen: dict[str, dict] = {}
    for event_record in records:  # newest first
        through = max(through or 0, event_record.storage_id)
        entry = event_record.event_log_entry
        if entry.timestamp < since:
            break
        meta = entry.asset_observation.metadata if entry.asset_observation else {}
        consumer = _value(meta, md.CONSUMER)
        if _value(meta, AUDIT) != "read" or consumer is None or consumer in seen:
            continue
        seen[consumer] = {
            "last_read": datetime.fromtimestamp(entry.timestamp, tz=timezone.utc).isoformat(timespec="seconds"),
            "version": _value(meta, md.DELTA_VERSION),
            "columns": list(_value(meta, md.COLUMNS_READ) or []),
        }
    for consumer, last in carried.items():  # read before the latest publish, and not since
        try:
            within = datetime.fromisoformat(last["last_read"]).timestamp() >= since
        except (KeyError, TypeError, ValueError):
            within = False
        if consumer not in seen and within:
            seen[consumer] = last
    return dict(sorted(seen.items())), through


def _record(kind: str, event_record, key: dg.AssetKey) -> AuditRecord | None:
    entry = event_record.event_log_entry
    data = entry.asset_materialization if kind == "publish" else entry.asset_observation
    if data is None:
        return None
    meta = data.metadata
    recorded = _value(meta, AUDIT)
    if recorded != kind and not (kind == "read" and recorded in OBSERVED_KINDS):
        return None
    kind = recorded
    return AuditRecord(
        kind=kind,
        time=datetime.fromtimestamp(entry.timestamp, tz=timezone.utc).isoformat(timespec="milliseconds"),
        product=_value(meta, md.PRODUCT, key.to_user_string()),
        asset_key=key.to_user_string(),
        port=_value(meta, md.PORT, ""),
        consumer=_value(meta, md.CONSUMER),
        columns=list(_value(meta, md.COLUMNS_READ) or _value(meta, md.LEGACY_COLUMNS_READ, []) or []),
        masked=list(_value(meta, md.MASKED, []) or []),
        removed=list(_value(meta, md.REMOVED, []) or []),
        rows=_value(meta, md.ROWS, _value(meta, "dagster/row_count")),
        run_id=entry.run_id,
        reason=_value(meta, md.REASON, ""),
        reasons=dict(_value(meta, md.REASONS, {}) or {}),
        version=_value(meta, md.DELTA_VERSION),
        masked_version=_value(meta, md.MASKED_VERSION),
        read_for=_value(meta, md.READ_FOR, "") or "",
    )


def audit_records(
    instance: dg.DagsterInstance,
    keys: Iterable[dg.AssetKey],
    product: str | None = None,
    consumer: str | None = None,
    limit: int = 10_000,
) -> list[AuditRecord]:
    """Every audited publish, read, denied read and quarantine of the given assets, oldest first, optionally filtered."""
    records: list[AuditRecord] = []
    published: set[tuple] = set()
    for key in keys:
        kinds = (("publish", instance.fetch_materializations), ("read", instance.fetch_observations))  # observations: reads, denials, quarantines
        for kind, fetch in kinds:
            for event_record in fetch(key, limit=limit).records:
                record = _record(kind, event_record, key)
                if record is None:
                    continue
                if record.kind == "publish":
                    # a run publishing several days of a daily-partitioned product makes one commit,
                    # recorded on each day's materialization: one publish in the audit log
                    commit = (record.run_id, record.asset_key, record.version)
                    if commit in published:
                        continue
                    published.add(commit)
                records.append(record)
    if product:
        records = [r for r in records if product in (r.product, r.asset_key)]
    if consumer:
        records = [r for r in records if r.consumer == consumer]
    return sorted(records, key=lambda r: r.time)
