"""The environment this process was started with: what its deployment set, before any domain code ran.

Domain code runs in the platform's process and may set environment variables after start (a module
of one domain doing ``os.environ["MESH_DOMAIN"] = "policies"``, or pointing ``MESH_QUOTAS`` at a
file of its own). Whatever decides *who* a step runs as or *what limits* the mesh has is therefore
read from the environment the process was started with, never from ``os.environ`` as it is now:

- on Linux, ``/proc/self/environ``: the kernel's copy of the environment passed to ``exec``, which
  ``os.environ``, ``os.putenv`` and ``setenv`` do not change;
- elsewhere, a copy taken when this module is first imported (``mesh_platform`` imports it first).

Which variables: :data:`FIXED`: the deployment's identity (``MESH_DOMAIN``), the mesh-wide quota
ceilings (``MESH_QUOTAS``), whether this is production (``MESH_ENV``, which makes the masking key
mandatory) and the pseudonymization key (``MESH_MASKING_KEY``: a key a domain chose would make the
pseudonyms other domains publish computable by it). Not yet among them: ``MESH_DOMAINS`` and ``MESH_WORKSPACE`` (where contracts and
grants are read), which tests and benchmarks still point elsewhere inside one process; a domain
that points them at files of its own changes what its own process believes, and storage is what
refuses it there. ``mesh validate`` loads each domain in a process of its own
(:func:`mesh_platform.mesh.validation.validate_mesh`), so no domain's module changes what the others'
loads find, whatever it rewrites (these variables, or the platform's own functions).

What this does not stop: code that writes the process's own memory (``ctypes``) can forge anything
in its process. That is why the per-domain storage credentials, not this module, are the wall
between domains (``docs/governance.md``); this module keeps a domain's *environment variables* from
changing identity or limits for the other domains loaded in the same process, and for itself.
"""

from __future__ import annotations

import os

# read only from the start environment (see the module docstring)
FIXED = ("MESH_DOMAIN", "MESH_QUOTAS", "MESH_ENV", "MESH_MASKING_KEY")

_PROC = "/proc/self/environ"


def _read_start_environment() -> dict[str, str] | None:
    try:
        with open(_PROC, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


_AT_IMPORT = {name: os.environ[name] for name in FIXED if name in os.environ}
_START = _read_start_environment()


def started_with(name: str, default: str | None = None) -> str | None:
    """``name`` as the process was started with it (``default`` when it was not set)."""
    if name not in FIXED:
        raise KeyError(f"{name} is not read from the start environment (FIXED lists those that are)")
    source = _START if _START is not None else _AT_IMPORT
    value = source.get(name)
    return value if value else default

