"""mesh_platform: the self-serve platform every domain of the mesh builds on.

Domains import what they declare with from here; the mechanisms live in one module per concept:
``contracts`` (ODCS model, loading, enforcement), ``products`` (assets from contracts), ``ports``
(input ports and mesh lineage), ``io`` (lake and publishing IO manager), ``domain`` (a domain's
code location), ``sources`` (operational systems), ``workspace`` and ``catalog`` (the mesh as a
whole), ``cli`` (the ``mesh`` command).
"""

from mesh_platform.domain import Domain, DomainDefinitionError
from mesh_platform.ports import InputPort

__all__ = ["Domain", "DomainDefinitionError", "InputPort"]
