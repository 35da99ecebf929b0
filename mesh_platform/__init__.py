"""mesh_platform: the self-serve platform every domain of the mesh builds on.

Domains import what they declare from here alone (``from mesh_platform import Domain, InputPort``),
so the packages below can move without a domain changing. The mechanisms live in packages named for
the layers of ``docs/architecture.md``, from the bottom up: ``foundations``, ``contracts``,
``governance``, ``storage``, ``quality``, ``products`` (a domain's products as Dagster definitions),
``dbt``, ``lineage``, ``sources``, ``mesh`` (the mesh as a whole), ``serving``, ``deployment``,
``selfserve`` and ``cli`` (the ``mesh`` command).
"""

import os

# First of all: the environment as the process was started (identity, quota ceilings, masking key),
# before any domain module can change it (mesh_platform.foundations.launch_env).
from mesh_platform.foundations import launch_env  # noqa: E402, F401

# What a run over a range of days (a partitioned product's backfill, mesh_platform.products.partitions)
# records when it is created: one "planned" event per asset and day where automation runs (Dagster
# sees a day in progress or failed only from those), one per asset on the embedded default (SQLite
# writes events one by one: 200 days of 6 assets cost ~30 s before the first step). Every process of
# the mesh imports this package (the CLI, code servers, and through the environment the webserver and
# daemon they start); `mesh stack up` and infra/ leave Dagster's per-day default.
from mesh_platform.foundations import settings as _settings  # noqa: E402

os.environ.setdefault(_settings.PLANNED_PER_RUN, _settings.planned_per_run(_settings.MeshSettings.from_env().automation))

from mesh_platform.products.domain import Domain, DomainDefinitionError  # noqa: E402
from mesh_platform.products.ports import InputPort  # noqa: E402
from mesh_platform.products.declarations import NotYet  # noqa: E402

# What else a domain's module declares with, imported when first named (PEP 562): a domain that does
# not read a landing zone never imports the sources package, and definitions load no faster or slower
# for the names being offered here.
_DECLARED_WITH = {
    "Rejects": "mesh_platform.quality.quarantine",
    "Screened": "mesh_platform.quality.quarantine",
    "ALL": "mesh_platform.products.partitions",
    "Window": "mesh_platform.products.partitions",
    "on_run_days": "mesh_platform.products.partitions",
    "Lookup": "mesh_platform.storage.lookup",
    "LandingZone": "mesh_platform.sources.systems",
    "SqlDatabase": "mesh_platform.sources.systems",
    "landed_for_run": "mesh_platform.sources.systems",
    "landing_zone_sensor": "mesh_platform.sources.landing_sensor",
    "record_landed": "mesh_platform.sources.landing_sensor",
    "policy": "mesh_platform.governance.policies",
    "Aggregate": "mesh_platform.governance.privacy",
    "count": "mesh_platform.governance.privacy",
    "mean": "mesh_platform.governance.privacy",
    "redact_contact_details": "mesh_platform.foundations.text",
}


def __getattr__(name: str):
    module = _DECLARED_WITH.get(name)
    if module is None:
        raise AttributeError(f"module 'mesh_platform' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Domain", "DomainDefinitionError", "InputPort", "NotYet", *_DECLARED_WITH]
