"""mesh_platform: the self-serve platform every domain of the mesh builds on.

Domains import what they declare with from here; the mechanisms live in one module per concept:
``contracts`` (ODCS model, loading, enforcement), ``products`` (assets from contracts), ``ports``
(input ports and mesh lineage), ``io`` (lake and publishing IO manager), ``domain`` (a domain's
code location), ``sources`` (operational systems), ``workspace`` and ``catalog`` (the mesh as a
whole), ``cli`` (the ``mesh`` command).
"""

import os

# First of all: the environment as the process was started (identity, quota ceilings, masking key),
# before any domain module can change it (mesh_platform.launch_env).
from mesh_platform import launch_env  # noqa: E402, F401

# A run over a range of days (a partitioned product's backfill, mesh_platform.partitions) records one
# "materialization planned" event per asset instead of one per asset and day: on the SQLite instance,
# which writes events one by one, 200 days of 6 assets cost ~30 s of bookkeeping before the first step.
# Every process of the mesh imports this package (the CLI, code servers, and through the environment
# the webserver and daemon they start); infra/ sets it for the production images.
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")

from mesh_platform.domain import Domain, DomainDefinitionError  # noqa: E402
from mesh_platform.ports import InputPort  # noqa: E402
from mesh_platform.declarations import NotYet  # noqa: E402

__all__ = ["Domain", "DomainDefinitionError", "InputPort", "NotYet"]
