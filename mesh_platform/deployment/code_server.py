"""A domain's code server whose runs start from a process that has loaded the domain already.

``python -m mesh_platform.deployment.code_server -h HOST -p PORT -m MODULE --location-name NAME``
is Dagster's own gRPC code server (``dagster api grpc``, the same arguments) with one change: how
it starts a run's process.

Dagster's server starts each run in a new Python process (``multiprocessing``'s "spawn"), which
imports Dagster, the domain's code and, in its steps, the libraries they need: 2 to 3.5 s before
the first step (measured for analytics: its module and dbt). Along the mesh every change pays it
once per hop (landing -> claims -> fraud -> analytics), about a fifth of the time a new claims
batch takes to reach the marts (``docs/automation.md``).

Here the server's runs are started from a ``multiprocessing`` *forkserver*: a process the code
server starts when it starts, which imports :mod:`mesh_platform.deployment.run_preload` (the
domain's module, its repository built, and the libraries its steps import) before it forks
anything. A run's process is then a fork of it, ready in about 10 ms. What stays as it was:

- each run is its own process, started, watched and cancelled by the code server through the same
  ``multiprocessing`` API (Dagster's run monitoring and termination are unchanged);
- the forkserver is the code server's child, with its environment: the domain's identity and
  nothing of another domain's; it exits with the code server. Whoever connects to its socket gets
  a process with that identity: the socket is in a folder only the code server's user can open
  (``multiprocessing`` makes it 0700), so as root, where each domain is its own user, no other
  domain reaches it (``mesh stack matrix``, ``tests/test_production_stack.py``);
- the code server loads the domain's definitions exactly as before, as fast as before: the
  libraries are imported by the forkserver, in its own process, while the server serves.

The switch happens once the forkserver has preloaded (a few seconds after the server starts; runs
launched before that start as Dagster starts them) and only if a probe process forked from it
finds it safe to fork (:func:`mesh_platform.deployment.run_preload.fork_hazards`: no Python thread,
no Delta Lake runtime); otherwise the server keeps Dagster's way and says why in its log.

It replaces the class Dagster's CLI instantiates (``dagster._grpc.server.DagsterApiServer``) by a
subclass that changes the multiprocessing context after Dagster's constructor; if a Dagster
release renames that attribute the server keeps Dagster's spawn and says so in its log
(``tests/test_code_server.py`` fails first). ``mesh stack up`` runs one per domain; on Kubernetes
each run is a pod of its own (``K8sRunLauncher``), so the chart keeps ``dagster code-server``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading

from mesh_platform.deployment import run_preload

log = logging.getLogger("dagster.code_server")  # configured by Dagster's CLI: the server's own log


def command(module: str, location: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line of a domain's code server (what ``mesh stack up`` starts per domain).

    ``--lazy-load-user-code``: the server still loads the domain when it starts, but a domain that
    fails to load is served as that error (named in the UI and by ``mesh stack status``) instead of
    ending the server, as ``dagster code-server start`` does."""
    return [sys.executable, "-m", __name__, "-h", host, "-p", str(port), "-m", module, "--location-name", location, "--lazy-load-user-code"]


PROBE_TIMEOUT = 600.0
"""Seconds the probe waits for the forkserver's preload (a few seconds; bounded all the same)."""


def warm_context(module_name: str) -> tuple[multiprocessing.context.BaseContext, dict]:
    """A forkserver context whose server has preloaded ``module_name`` and its runs' libraries, and
    what a process forked from it reports (:func:`run_preload.report`). Blocks until then."""
    os.environ[run_preload.ENV] = module_name  # read by run_preload, imported in the forkserver
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([run_preload.__name__])
    queue = context.Queue()
    probe = context.Process(target=run_preload.report, args=(queue,), name="mesh-run-preload-probe")
    probe.start()  # starts the forkserver, which preloads, then forks the probe
    try:
        return context, queue.get(timeout=PROBE_TIMEOUT)
    finally:
        probe.join(timeout=10)


def warm_up(server, module_name: str) -> None:
    """Start ``server``'s runs from a preloaded forkserver once it is ready and safe to fork; until
    then (and for good if it is not) they start as Dagster starts them."""
    try:
        context, state = warm_context(module_name)
    except Exception:
        log.warning("%s: runs start in fresh processes: the preloading process did not start", module_name, exc_info=True)
        return
    if state.get("hazards"):
        log.warning("%s: runs start in fresh processes: the preloaded process cannot be forked safely (%s)", module_name, "; ".join(state["hazards"]))
        return
    server._mp_ctx = context
    log.info("%s: runs start from a preloaded process (pid %s, ready in %.1f s%s)", module_name, state.get("parent"), state.get("seconds", 0),
             f"; not preloaded: {', '.join(state['failed'])}" if state.get("failed") else "")


def install() -> None:
    """Make Dagster's gRPC server in this process start its runs from a warm forkserver."""
    from dagster._grpc import server

    class WarmRunsApiServer(server.DagsterApiServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            origin = getattr(self, "_loadable_target_origin", None)
            module_name = getattr(origin, "module_name", None)
            if not module_name or not hasattr(self, "_mp_ctx"):
                log.warning("runs start in fresh processes: no module to preload, or this Dagster's server has no _mp_ctx")
                return
            threading.Thread(target=warm_up, args=(self, module_name), name="mesh-warm-runs", daemon=True).start()

    server.DagsterApiServer = WarmRunsApiServer


def main(argv: list[str] | None = None) -> None:
    install()
    from dagster._cli import main as dagster_cli

    sys.argv = ["dagster", "api", "grpc", *(sys.argv[1:] if argv is None else argv)]
    dagster_cli()


if __name__ == "__main__":
    main()
