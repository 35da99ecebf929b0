"""What a domain's run processes are forked from: its code, loaded once, and its steps' libraries.

A code server started by :mod:`mesh_platform.deployment.code_server` starts its runs from a
``multiprocessing`` forkserver that imports this module once, when the server starts. Importing it
with ``MESH_RUN_PRELOAD`` set to the domain's module (the code server sets it) loads that module,
builds its repository, and imports the libraries its runs' steps import lazily (a domain's module
never imports them itself, so that its definitions load fast):

- for every domain, the platform's own: Delta Lake and Arrow (ports), DuckDB, the instance's
  Postgres storages, the run worker's entry point and the deferred quality reports;
- dbt and the SQL lineage parser, for a domain implemented with dbt;
- OpenDP, for a domain that reads a port as differentially private aggregates;
- what the domain declares in ``domain.yaml`` (``deployment.run_imports``: fraud's scikit-learn).

Then everything loaded is frozen out of the garbage collector's sight (:func:`settle`): a run's
collections do not walk the location's objects again, and the forked runs share their pages.

Nothing here may break a run: a module that fails to import or a domain that fails to load is
logged and left out, and a run forked from this process imports it itself, as a fresh process
would, and fails the same way. Nothing here opens the instance, the lake or S3: each run does.

A fork copies one thread. Threads the imports start are fork-safe (jemalloc's and OpenBLAS's
handle a fork), but a Python thread, or the Tokio runtime of Delta Lake (started by a domain that
reads the lake while it loads, e.g. to load against a contract its producer last published), is
not: Delta Lake refuses to run in a fork of the process that started it. :func:`fork_hazards`
names them; the code server then keeps starting runs the way Dagster does (spawn).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from pathlib import Path
from types import ModuleType

ENV = "MESH_RUN_PRELOAD"
"""The domain's module (``domains.claims.definitions``), set by the code server for its forkserver."""

PLATFORM_RUN_IMPORTS = (
    "dagster._grpc.impl",  # start_run_in_subprocess: what each run process executes
    "dagster._core.execution.api",
    "mesh_platform.deployment.instance_storage",  # SQLAlchemy, psycopg2, dagster-postgres
    "deltalake",
    "pyarrow.dataset",
    "pyarrow.compute",
    "duckdb",
    "mesh_platform.quality.deferred",
    "mesh_platform.quality.reports",
)
DBT_RUN_IMPORTS = ("dbt.cli.main", "dbt.adapters.duckdb", "mesh_platform.dbt.sql_lineage")
AGGREGATE_RUN_IMPORTS = ("opendp.prelude",)

log = logging.getLogger("mesh_platform.run_preload")


def domain_of(module: ModuleType):
    """The :class:`~mesh_platform.products.domain.Domain` a domain's module declares (``domain = Domain.load(__file__)``), if any."""
    from mesh_platform.products.domain import Domain

    return next((value for value in vars(module).values() if isinstance(value, Domain)), None)


def run_imports(module: ModuleType) -> list[str]:
    """The modules the runs of the code location in ``module`` import in their steps."""
    names = list(PLATFORM_RUN_IMPORTS)
    domain = domain_of(module)
    if domain is None:
        return names
    if domain.dbt_project is not None:
        names += DBT_RUN_IMPORTS
    if any(port.aggregate is not None for ports in domain.input_ports.values() for port in ports):
        names += AGGREGATE_RUN_IMPORTS
    from mesh_platform.deployment.helm import deployment_of
    from mesh_platform.products.descriptor import DESCRIPTOR

    names += deployment_of(domain.root / DESCRIPTOR)[1].run_imports
    return names


def fork_hazards() -> list[str]:
    """The threads of this process that a forked child could not do without (empty: safe to fork)."""
    hazards = [f"Python thread {t.name!r}" for t in threading.enumerate() if t is not threading.main_thread()]
    tasks = Path("/proc/self/task")
    if tasks.is_dir():
        for task in tasks.iterdir():
            try:
                name = (task / "comm").read_text().strip()
            except OSError:  # the thread ended meanwhile
                continue
            if name.startswith("tokio"):
                hazards.append(f"native thread {name!r} (Delta Lake's runtime)")
    return sorted(set(hazards))


def warm(module: ModuleType) -> list[str]:
    """Import what the runs of the loaded code location in ``module`` import (:func:`run_imports`)
    and do a dbt domain's per-process work (:func:`analyse_ahead`); what failed: the modules left
    out, or the location's own module when its list of imports cannot be read (a bad
    ``deployment.run_imports``: the run reports it)."""
    try:
        names = run_imports(module)
    except Exception:
        log.warning("%s: what its runs import could not be read; each run imports it", module.__name__, exc_info=True)
        return [module.__name__]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(name)
            log.warning("%s: %s is not preloaded for its runs (%s)", module.__name__, name, exc)
    analyse_ahead(module)
    return failed


def analyse_ahead(module: ModuleType) -> None:
    """What each run of a dbt domain would otherwise work out again: its models' column lineage from
    their SQL (about 0.1 s a model), the prepared manifest (0.2 s), and dbt's one-time work per
    process: one ``dbt build`` over empty sources in a temporary folder
    (:meth:`~mesh_platform.dbt.plan.DbtPlan.warm_build`) builds the JSON schemas dbt validates the
    project, profile and credentials against, the module-by-file index of ``inspect`` that dbt's
    behaviour flags walk when the adapter is registered, and the compiled Jinja of every macro a
    build calls: most of a second of a first ``dbt build``. Its threads end with it and its
    database is closed: nothing of it is left for a fork to inherit."""
    domain = domain_of(module)
    plan = getattr(getattr(domain, "last_plan", None), "dbt", None)
    if plan is None:
        return
    try:
        plan.analyse_models()
        plan.project.dbt_manifest()
        plan.warm_build()
    except Exception:  # the run does it itself and reports what fails
        log.warning("%s: dbt's per-process work is not done ahead of its runs", module.__name__, exc_info=True)


def settle() -> None:
    """Move everything loaded so far out of the cyclic garbage collector's sight (``gc.freeze``),
    after collecting what is already garbage: the code location, its libraries and dbt's state are
    kept for the life of the process, and every full collection of a run would otherwise walk them
    again. At 180 days of claims, the in-process runs of a new day spent 0.14-0.17 s of collections
    walking the loaded mesh (one pause in claims), and the whole command 1.5 s (measured with
    ``gc.callbacks``); after settling, 0.04 s and 1.1-1.3 s. In a forkserver it also keeps those
    objects' memory pages shared with the forked runs, since a collection in a child no longer
    writes to them (Python's documented use of ``gc.freeze`` before forking). Objects that later
    become cyclic garbage among the frozen ones are not reclaimed: what is frozen is what a
    process keeps anyway."""
    import gc

    gc.collect()
    gc.freeze()


STATE: dict = {}
"""What :func:`preload` did in this process: ``module``, ``failed`` (modules left out), ``seconds``,
``hazards`` (:func:`fork_hazards` after it). A forked run inherits it; :func:`report` sends it."""


def preload(module_name: str) -> dict:
    """Load the code location in ``module_name`` and what its runs import; say what failed."""
    started = time.monotonic()
    try:
        module = importlib.import_module(module_name)
        defs = getattr(module, "defs", None)
        if defs is not None and hasattr(defs, "get_repository_def"):
            defs.get_repository_def()  # built once here; each run's process finds it built
    except Exception:  # the run imports the module itself and reports the same error
        log.warning("%s: the code location did not load ahead of its runs; each run loads it", module_name, exc_info=True)
        failed = [module_name]
    else:
        failed = warm(module)
    settle()
    STATE.update(module=module_name, failed=failed, seconds=round(time.monotonic() - started, 2), hazards=fork_hazards())
    return STATE


def report(queue) -> None:
    """Target of the code server's probe, forked like a run: what the preload did, as the run sees it."""
    queue.put(dict(STATE, pid=os.getpid(), parent=os.getppid()))


if os.environ.get(ENV):
    preload(os.environ[ENV])
