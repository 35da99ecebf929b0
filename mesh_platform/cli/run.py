"""Running the mesh: ``mesh simulate``, ``mesh materialize``, ``mesh dev``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from mesh_platform.cli.common import command_settings, ensure_sources, load_mesh, prepare_dbt, run_stoppably, signal_group


@click.command()
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplies every entity count.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--rejects", is_flag=True, help="Add a few bad source rows the domains must quarantine (a file with an extra column, unknown policies, a conflicting duplicate).")
def simulate(scale: float, seed: int, rejects: bool) -> None:
    """(Re)generate the simulated operational sources (policy DB, claims landing zone, chat export)."""
    from mesh_platform.sources.simulation import simulate as run

    settings = command_settings()
    summary = run(settings.sources, scale=scale, seed=seed, rejects=rejects)
    click.echo(json.dumps(summary, indent=2))


@click.command()
@click.option("--select", "-s", "selection", default=None,
              help="Comma-separated domain or domain/asset; * before/after for upstream/downstream; -item leaves it out (claims*,-fraud/fraud_model).")
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
@click.option("--in-process", "in_process", is_flag=True,
              help="Execute each run in this process (no daemon, no run queue; runs have no code location).")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds to wait for each queued run.")
@click.option("--partition", "partition", default=None, metavar="DAY", help="Materialize this day (YYYY-MM-DD) of the daily-partitioned products.")
@click.option("--from", "first", default=None, metavar="DAY", help="Backfill the partitioned products from this day ...")
@click.option("--to", "last", default=None, metavar="DAY", help="... to this day (inclusive), in the same runs as one day (not a run per day).")
def materialize(selection: str | None, scale: float | None, workspace: Path | None, in_process: bool, timeout: float,
                partition: str | None, first: str | None, last: str | None) -> None:
    """Materialize the mesh (or a selection) across code locations, in dependency order.

    A run is one domain's assets whose upstream domains are done: a domain whose assets wait on
    different domains takes more than one run. Each run is submitted to the Dagster instance's run
    queue for its code location and launched by the daemon (start `mesh dev` or `mesh stack up`
    first), independent domains at the same time; --in-process runs them here, one at a time.

    Daily-partitioned products (claims, claim events, fraud features and scores) materialize every
    day unless --partition DAY or --from DAY --to DAY say which; unpartitioned products downstream
    of them are rebuilt whole in the same runs.
    """
    from mesh_platform.mesh.instance import local_instance
    from mesh_platform.mesh.materialize import SelectionError, check_days, select
    from mesh_platform.mesh.materialize import materialize as run

    if partition and (first or last):
        raise click.UsageError("give --partition DAY, or --from DAY --to DAY, not both")
    if bool(first) != bool(last):
        raise click.UsageError("--from and --to go together (the same day for one day)")
    days = (partition, partition) if partition else ((first, last) if first else None)

    settings = command_settings()
    ensure_sources(settings, scale)
    mesh = load_mesh(workspace, report=True)
    try:
        keys = select(mesh, selection)
        if days is not None:
            check_days(mesh, keys, days)
    except SelectionError as exc:
        raise click.UsageError(str(exc)) from None
    instance = local_instance(settings)
    if days is not None:
        click.echo(f"partitions: {days[0]}" + (f" to {days[1]}" if days[1] != days[0] else ""))
    domains = len({k.path[0] for k in keys})
    if in_process:
        click.echo(f"materializing {len(keys)} asset(s) of {domains} domain(s) in this process, one run at a time, "
                   f"into the Dagster instance at {settings.dagster_home}")
        report = run_stoppably(lambda stop: run(mesh, keys, instance, progress=click.echo, days=days, stop=stop), instance)
    else:
        from mesh_platform.mesh.submission import QueuedRunner, SubmissionError, check_daemon, workspace_file

        try:
            check_daemon(instance)
            dagster_workspace = workspace_file(settings, mesh.workspace)
            click.echo(f"materializing {len(keys)} asset(s) of {domains} domain(s) through the run queue of the "
                       f"Dagster instance at {settings.dagster_home} (workspace {dagster_workspace}): a run is one domain's "
                       f"assets whose upstream domains are done, so a domain may take more than one run")
            with QueuedRunner(instance, dagster_workspace, progress=click.echo, timeout=timeout) as runner:
                report = run(mesh, keys, instance, progress=click.echo, runner=runner, days=days)
        except SubmissionError as exc:
            raise click.ClickException(str(exc)) from None
    ok = report.success and not mesh.problems
    runs = len(report.runs)
    failed = sum(not r.success for r in report.runs)
    unloaded = f", {len(report.unloaded)} domain(s) not loaded ({', '.join(report.unloaded)})" if report.unloaded else ""
    ran = len({r.domain for r in report.runs})
    click.echo(f"{'done' if ok else 'FAILED'}: {runs} run(s) of {ran} domain(s), {failed} failed, {len(report.skipped)} asset(s) skipped{unloaded}")
    sys.exit(0 if ok else 1)


def dev_command(workspace: Path, args: tuple[str, ...]) -> list[str]:
    """`dg dev` over the project's dg workspace (dg.toml next to workspace.yaml, docs/dg.md), in this
    environment; `dagster dev -w workspace.yaml` when there is no dg.toml or dg is not installed."""
    import importlib.util

    if (workspace.parent / "dg.toml").exists() and importlib.util.find_spec("dagster_dg_cli") is not None:
        return [sys.executable, "-c", "import sys; from dagster_dg_cli.cli import main; sys.argv[0] = 'dg'; sys.exit(main())", "dev", "--use-active-venv", *args]
    return [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), *args]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(scale: float | None, dagster_args: tuple[str, ...]) -> None:
    """Run the mesh locally: demo sources, then `dg dev` over the domains (extra args go to it)."""
    from mesh_platform.mesh.devserver import StartupWatcher, dagster_dev_args, option
    from mesh_platform.mesh.instance import ensure_dagster_home
    from mesh_platform.mesh.workspace import find_workspace, read_workspace

    settings = command_settings()
    ensure_sources(settings, scale)
    prepare_dbt()
    ensure_dagster_home(settings)
    workspace = find_workspace()
    click.echo(f"Dagster instance: {settings.dagster_home}\nlake: {settings.lake}\nworkspace: {workspace}")
    from mesh_platform.cli.stack import mesh_command

    click.echo(f"materialize everything with `{mesh_command()} materialize` in another shell, or from the UI")
    try:
        locations = [e.location for e in read_workspace(workspace)]
    except Exception:  # dagster dev reports a broken workspace file itself
        locations = []
    click.echo(f"starting Dagster (webserver, daemon, {len(locations)} code server(s)); loading the domains takes about half a minute...")
    watcher = StartupWatcher(option(dagster_args, ("--host", "-h", "--dagit-host"), "127.0.0.1"),
                             option(dagster_args, ("--port", "-p", "--dagit-port"), "3000"), locations, click.echo)
    cmd = dev_command(workspace, tuple(dagster_dev_args(dagster_args)))
    # Own process group, so that Ctrl-C / SIGTERM ends dagster dev *and* its code servers.
    proc = subprocess.Popen(cmd, cwd=workspace.parent, start_new_session=True)

    stop_requested: list[float] = []

    def stop(_signum, _frame):
        if not stop_requested:
            stop_requested.append(time.monotonic())
            signal_group(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while (code := proc.poll()) is None:
            if not stop_requested:
                watcher.poll()
            # dagster dev has been seen to ignore SIGTERM: escalate after a grace period.
            if stop_requested and time.monotonic() - stop_requested[0] > 15:
                signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        signal_group(proc.pid, signal.SIGKILL)
    sys.exit(code)
