"""Retention of output ports: how much history a port keeps, and the job that enforces it.

A contract says how many versions of its port to keep, or for how many days, as an ODCS custom
property (checked when the contract loads, like ``quarantine``)::

    customProperties:
      - property: retention
        value: {versions: 10, days: 30}   # either or both; a version is kept when either keeps it

Without it a port keeps its last :data:`DEFAULT_VERSIONS` versions. The latest version is always
kept. Each domain gets, from the platform, a job ``<domain>_lake_maintenance`` and a daily schedule
that vacuum every port table of the domain (all majors, full and masked variants) with the
retention of its product's contract (:func:`mesh_platform.storage.delta.vacuum`: data files no kept
version reads are deleted; the log is not rewritten, so the current version does not move), and
record per port the bytes it keeps, history included (``mesh/stored_bytes``), as an observation
of the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.contracts.model import retention_problems  # noqa: F401 - checked when a contract loads
from mesh_platform.storage import delta
from mesh_platform.storage.lake import Lake

PROPERTY = "retention"
DEFAULT_VERSIONS = 10
MAINTENANCE_CRON = "30 3 * * *"  # daily, at night (UTC)
_TABLE = re.compile(r"^v(?P<major>[0-9]+)(?:_(?P<variant>masked))?$")


@dataclass(frozen=True)
class Retention:
    versions: int | None = DEFAULT_VERSIONS
    days: float | None = None

    def as_metadata(self) -> dict:
        return {"versions": self.versions, "days": self.days}


def retention_of(contract) -> Retention:
    """The contract's retention (contracts with a malformed one do not load)."""
    value = contract.custom(PROPERTY)
    if value is None:
        return Retention()
    return Retention(value.get("versions"), float(value["days"]) if value.get("days") is not None else None)


def port_tables(lake: Lake, domain: str, product: str) -> list[tuple[str, int, str]]:
    """Every port table of a product in the lake: (relpath, major, variant)."""
    found = []
    for name in lake.list(f"{domain}/{product}"):
        match = _TABLE.match(name)
        if match:
            found.append((f"{domain}/{product}/{name}", int(match.group("major")), match.group("variant") or "full"))
    return found


def vacuum_domain(lake: Lake, domain: str, contracts: dict[str, Any], now: float | None = None) -> list[dict]:
    """Vacuum every port table of ``domain`` by its contract's retention; one report per table."""
    reports = []
    for product, contract in sorted(contracts.items()):
        retention = retention_of(contract)
        for relpath, major, variant in port_tables(lake, domain, product):
            port = f"{contract.id} v{major}" + ("" if variant == "full" else f" ({variant})")
            removed = delta.vacuum(lake, relpath, port, retention.versions, retention.days, now=now)
            reports.append({
                "product": product, "major": major, "variant": variant, "path": relpath,
                "removed": removed, "stored_bytes": delta.size(lake, relpath), "retention": retention.as_metadata(),
            })
    return reports


def maintenance_job(domain: str, contracts: dict[str, Any], lake_root: str, run_tags: dict[str, str] | None = None) -> dg.JobDefinition:
    """The domain's lake maintenance: vacuum its ports, report what each keeps."""

    @dg.op(name=f"{domain}_vacuum_ports", description=f"Deletes the data files of {domain}'s port versions its contracts no longer keep.")
    def vacuum_ports(context) -> None:
        for report in vacuum_domain(Lake(lake_root), domain, contracts):
            name = report["product"] if report["major"] == contracts[report["product"]].major else f"{report['product']}_v{report['major']}"
            context.log_event(dg.AssetObservation(
                asset_key=dg.AssetKey([domain, name]),
                metadata={
                    md.AUDIT: "vacuum",
                    md.PORT: f"v{report['major']}/{report['variant']}",
                    md.STORED_BYTES: report["stored_bytes"],
                    md.VACUUMED_FILES: len(report["removed"]),
                    md.RETENTION: dg.MetadataValue.json(report["retention"]),
                },
            ))
            context.log.debug(f"{report['path']}: {len(report['removed'])} file(s) vacuumed, {report['stored_bytes']} bytes kept")  # the observation above says it

    @dg.job(name=f"{domain}_lake_maintenance", tags={**(run_tags or {})}, description=f"Vacuums {domain}'s output ports by their contracts' retention.")
    def maintenance():
        vacuum_ports()

    return maintenance


def maintenance_schedule(job: dg.JobDefinition, running: bool = False) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{job.name}_daily",
        job=job,
        cron_schedule=MAINTENANCE_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description="Vacuums the domain's output ports daily, keeping what each contract's retention says.",
    )
