"""What every ``mesh`` command shares: its settings (read once, pinned for its children), the sources, the loaded mesh, dbt manifests, stopping cleanly.

Every command reads the same environment as the code locations (``MESH_HOME``, ``MESH_LAKE``,
``MESH_SOURCES``, ``DAGSTER_HOME``; see :mod:`mesh_platform.foundations.settings`) once, in
:func:`command_settings`, passes the settings down, and pins them for the child processes it starts,
so the command line and ``dagster dev`` always agree on where things are.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from mesh_platform.foundations.settings import MeshSettings


def command_settings() -> MeshSettings:
    """The command's settings: read once (the command line is an entry point), pinned for its children."""
    settings = MeshSettings.from_env()
    settings.export()
    return settings


def ensure_sources(settings: MeshSettings, scale: float | None) -> None:
    from mesh_platform.sources.simulation import simulate, simulation_summary

    current = simulation_summary(settings.sources)
    if scale is None and current is not None:
        return
    summary = simulate(settings.sources, scale=scale or 1.0)
    click.echo(
        f"simulated operational sources at scale {summary['scale']:g} in {settings.sources}: "
        f"{summary['customers']:,} customers, {summary['policies']:,} policies, {summary['claims']:,} claims, "
        f"{summary['conversations']:,} conversations"
    )


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def interrupt_when_dagster_captured(stop, received: list[int], main_thread: int) -> None:
    """While a run executes in this process, Dagster replaces the SIGINT/SIGTERM handlers with one that
    only sets a flag, which its in-process executor never reads while it waits for a pool slot (the
    run would wait for ever). This thread watches that flag and raises KeyboardInterrupt in the main
    thread, which ends the run; the command then cancels it and frees its slots."""
    import ctypes

    from dagster._utils.interrupts import check_captured_interrupt

    while not stop.wait(0.2):  # ends with the command (daemon thread) or once stopping
        if check_captured_interrupt():
            received.append(signal.SIGTERM)  # Dagster maps both to one handler; which one is not kept
            stop.set()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main_thread), ctypes.py_object(KeyboardInterrupt))
            return


def run_stoppably(execute, instance):
    """Run ``execute(stop)`` so that SIGTERM and SIGINT stop it: the run in progress is interrupted,
    nothing further starts, this process's unfinished runs are marked canceled with their pool
    slots freed (:mod:`mesh_platform.mesh.run_cleanup`), and the command exits 130 (SIGINT) or 143 (SIGTERM)."""
    import threading

    from mesh_platform.mesh.run_cleanup import release_own_runs

    stop = threading.Event()
    received: list[int] = []

    def interrupt(signum, frame):
        received.append(signum)
        stop.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    watchdog = threading.Thread(target=interrupt_when_dagster_captured, args=(stop, received, threading.main_thread().ident), daemon=True)
    watchdog.start()
    try:
        result = execute(stop)
    except KeyboardInterrupt:
        stop.set()
        if not received:
            received.append(signal.SIGINT)
        result = None
    finally:
        interrupted = stop.is_set()
        stop.set()  # ends the watchdog
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        name = signal.Signals(received[0]).name if received else "a signal"
        released = release_own_runs(instance, name)
        click.echo(f"stopped by {name}: {len(released)} unfinished run(s) marked canceled, their pool slots freed", err=True)
        raise SystemExit(128 + (received[0] if received else signal.SIGINT))
    return result


def load_mesh(workspace: Path | None, report: bool = False):
    """The mesh of ``workspace`` (default: nearest); an unreadable workspace file is a clean error naming it.

    With ``report``, each domain's problem is printed as an error (the other domains still load).
    """
    from mesh_platform.foundations.problems import ContractError
    from mesh_platform.mesh.workspace import Mesh

    prepare_dbt(workspace)  # a dbt domain loads from its manifest: a fresh clone has none yet
    try:
        mesh = Mesh.load(workspace)
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    if report:
        for problem in mesh.problems:
            click.echo(f"error: {problem}", err=True)
    return mesh


def dbt_projects(workspace: Path | None = None):
    from mesh_platform.dbt.project import DbtDomainProject
    from mesh_platform.mesh.workspace import find_workspace

    root = (Path(workspace).resolve() if workspace else find_workspace()).parent / "dbt"
    return [DbtDomainProject(p.parent) for p in sorted(root.glob("*/dbt_project.yml"))]


def prepare_dbt(workspace: Path | None = None) -> None:
    """Parse each dbt domain's manifest when it is missing or stale (its files changed). Progress and
    problems go to stderr, so that a command's output (``--json`` included) stays its own."""
    from mesh_platform.foundations.problems import ContractError

    for project in dbt_projects(workspace):
        if project.is_stale():
            try:
                project.prepare()
            except ContractError as exc:  # hostile YAML: reported, and that domain fails to load (stale manifest)
                for problem in exc.problems:
                    click.echo(f"error: {problem}", err=True)
                continue
            click.echo(f"prepared dbt manifest {project.manifest_path}", err=True)
