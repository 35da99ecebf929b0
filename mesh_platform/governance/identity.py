"""Who is reading or writing: the domain a step runs as, bound by the platform, never by domain code.

A domain's identity is where its code runs, not anything its code says. The platform binds it from,
in order of authority:

1. **The deployment.** ``MESH_DOMAIN`` in the environment the process was started with (not as
   domain code may have changed it since: :mod:`mesh_platform.foundations.launch_env`). In production each domain's
   user-code deployment (and the run workers it launches) sets it, next to that domain's own S3
   credentials, so storage enforces the same identity (``mesh iam``, ``docs/governance.md``).
2. **The run's code location.** Dagster records the code location a run was launched from (the
   ``location_name`` of ``workspace.yaml``, which the platform team owns) in the run's origin,
   written by the webserver or the daemon, not by domain code.
3. **A run executed in-process** (``mesh materialize``, tests, benchmarks) has no origin: the step
   runs as the domain of the assets it computes. The workspace loader refuses a code location that
   defines assets under another domain's key (:mod:`mesh_platform.mesh.workspace`), so this is still
   the location's domain.

When these disagree (a location computing another domain's asset, a deployment serving another
location's runs, an IO manager configured as another domain) the step is refused. Nothing a domain
writes (IO manager configuration, asset metadata, run tags) is taken as its identity.

Python in one process is not a sandbox: hostile code could patch the platform itself. That is why
the check here stops careless and impersonating *configuration*, and the per-domain storage
credentials stop hostile *code* (``tests/test_storage_grants_s3.py`` shows the storage refusing).
"""

from __future__ import annotations

from mesh_platform.foundations.launch_env import started_with

DEPLOYMENT_ENV = "MESH_DOMAIN"


class IdentityError(PermissionError):
    """A step whose domain cannot be told, or that claims to be another domain."""

    def __init__(self, message: str, domain: str | None = None):
        super().__init__(message)
        self.domain = domain  # the domain the step was bound to, when that much was known
        self.reason = message


def deployed_domain() -> str | None:
    """The domain this process was deployed as (``MESH_DOMAIN`` as the process was *started*), if any.

    Never ``os.environ`` as it is now: a domain's module that sets ``MESH_DOMAIN`` after start changes
    nothing, for itself or for the other domains loaded in the same process (:mod:`mesh_platform.foundations.launch_env`)."""
    return started_with(DEPLOYMENT_ENV)


def run_location(dagster_run) -> str | None:
    """The code location a run was launched from (None for in-process execution)."""
    origin = getattr(dagster_run, "remote_job_origin", None)
    if origin is None:
        return None
    return origin.repository_origin.code_location_origin.location_name


def computed_domains(step_context) -> set[str]:
    """The domains of the assets a step computes (its asset keys' first part)."""
    assets_def = step_context.assets_def
    if assets_def is None:
        return set()
    return {key.path[0] for key in assets_def.keys}


def bind(deployed: str | None, location: str | None, computing: set[str], configured: str | None = None) -> str:
    """The one domain a step runs as, from what the platform knows; raises :class:`IdentityError`."""
    if deployed and location and deployed != location:
        raise IdentityError(
            f"this deployment is domain {deployed!r} ({DEPLOYMENT_ENV}) but the run was launched from code location {location!r}"
        )
    bound = deployed or location
    if bound is None:
        if len(computing) != 1:
            found = ", ".join(sorted(computing)) or "no asset"
            raise IdentityError(f"cannot tell which domain this step runs as (it computes {found}); run it from its domain's code location")
        bound = next(iter(computing))
    foreign = sorted(computing - {bound})
    if foreign:
        raise IdentityError(f"code location {bound!r} computes assets of domain(s) {', '.join(foreign)}; a domain writes only its own assets", bound)
    if configured and configured != bound:
        raise IdentityError(
            f"the IO manager is configured as domain {configured!r} but this step runs as domain {bound!r}; "
            "a domain's identity comes from where it runs, not from configuration",
            bound,
        )
    return bound


def domain_of_step(step_context, configured: str | None = None) -> str:
    """The domain the current step runs as (see the module docstring for the order)."""
    return bind(deployed_domain(), run_location(step_context.dagster_run), computed_domains(step_context), configured)
