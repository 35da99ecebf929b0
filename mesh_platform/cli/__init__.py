"""The ``mesh`` command line: validate, simulate, materialize, catalog, dev.

Every command reads the same environment as the code locations (``MESH_HOME``, ``MESH_LAKE``,
``MESH_SOURCES``, ``DAGSTER_HOME``; see :mod:`mesh_platform.settings`) and pins it for the child
processes it starts, so the command line and ``dagster dev`` always agree on where things are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from mesh_platform.settings import MeshSettings


def _settings() -> MeshSettings:
    settings = MeshSettings.from_env()
    settings.export()
    return settings


def _ensure_sources(settings: MeshSettings, scale: float | None) -> None:
    from mesh_platform.simulation import simulate, simulation_summary

    current = simulation_summary(settings.sources)
    if scale is None and current is not None:
        return
    summary = simulate(settings.sources, scale=scale or 1.0)
    click.echo(
        f"simulated operational sources at scale {summary['scale']:g} in {settings.sources}: "
        f"{summary['customers']:,} customers, {summary['policies']:,} policies, {summary['claims']:,} claims, "
        f"{summary['conversations']:,} conversations"
    )


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the data mesh: domains are Dagster code locations, products are contract-checked assets."""


@main.command()
@click.argument("contracts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path), help="workspace.yaml (default: nearest)")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(contracts: tuple[Path, ...], workspace: Path | None, as_json: bool) -> None:
    """Check every contract and load every domain; report each problem with file and field.

    With CONTRACTS, check only those contract files. Exits 1 when anything is wrong.
    """
    from mesh_platform.validation import validate_files, validate_mesh

    _settings()
    report = validate_files(list(contracts)) if contracts else validate_mesh(workspace)
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "problems": [p.__dict__ for p in report.problems]}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"error: {problem}", err=True)
        if contracts:
            summary = f"{report.contracts} of {len(contracts)} contract file(s) valid"
        else:
            summary = (
                f"{report.domains} domain(s) loaded, {report.products} product(s), "
                f"{report.input_ports} input port(s), {report.contracts} contract(s)"
            )
        status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"{summary}: {status}")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplies every entity count.")
@click.option("--seed", type=int, default=7, show_default=True)
def simulate(scale: float, seed: int) -> None:
    """(Re)generate the simulated operational sources (policy DB, claims landing zone, chat export)."""
    from mesh_platform.simulation import simulate as run

    settings = _settings()
    summary = run(settings.sources, scale=scale, seed=seed)
    click.echo(json.dumps(summary, indent=2))


@main.command()
@click.option("--select", "-s", "selection", default=None, help="Comma-separated domain or domain/asset; * before/after for upstream/downstream.")
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def materialize(selection: str | None, scale: float | None, workspace: Path | None) -> None:
    """Materialize the mesh (or a selection) across code locations, in dependency order."""
    from mesh_platform.instance import local_instance
    from mesh_platform.materialize import SelectionError, materialize as run, select
    from mesh_platform.workspace import Mesh

    settings = _settings()
    _ensure_sources(settings, scale)
    mesh = Mesh.load(workspace)
    for problem in mesh.problems:
        click.echo(f"error: {problem}", err=True)
    try:
        keys = select(mesh, selection)
    except SelectionError as exc:
        raise click.UsageError(str(exc)) from None
    instance = local_instance(settings)
    click.echo(f"materializing {len(keys)} asset(s) into the Dagster instance at {settings.dagster_home}")
    report = run(mesh, keys, instance, progress=click.echo)
    ok = report.success and not mesh.problems
    runs = len(report.runs)
    failed = sum(not r.success for r in report.runs)
    click.echo(f"{'done' if ok else 'FAILED'}: {runs} run(s), {failed} failed, {len(report.skipped)} asset(s) skipped")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable catalog.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def catalog(as_json: bool, workspace: Path | None) -> None:
    """List every data product: owner, version, ports, lineage, last materialization."""
    from mesh_platform.catalog import build_catalog
    from mesh_platform.instance import local_instance
    from mesh_platform.workspace import Mesh

    settings = _settings()
    mesh = Mesh.load(workspace)
    for problem in mesh.problems:
        click.echo(f"error: {problem}", err=True)
    entries = build_catalog(mesh, local_instance(settings))
    if as_json:
        click.echo(json.dumps({"products": [e.as_dict() for e in entries]}, indent=2))
        return
    for e in entries:
        click.echo(f"{e.key}  v{e.version} ({e.status}, {e.access_level or 'no access level'})  owners: {', '.join(e.owners)}")
        click.echo(f"    {e.description}")
        click.echo(f"    output port: {e.output_port}")
        for port in e.input_ports:
            click.echo(f"    input port {port['param']}: {port['product']} v{port['major']}")
        click.echo(f"    upstream: {', '.join(e.upstream) or '-'}   downstream: {', '.join(e.downstream) or '-'}")
        last = f"{e.last_materialized} ({e.row_count:,} rows)" if e.last_materialized and e.row_count is not None else (e.last_materialized or "never")
        click.echo(f"    last materialized: {last}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(scale: float | None, dagster_args: tuple[str, ...]) -> None:
    """Run the mesh locally: demo sources, then `dagster dev` over workspace.yaml (extra args go to it)."""
    from mesh_platform.instance import ensure_dagster_home
    from mesh_platform.workspace import find_workspace

    settings = _settings()
    _ensure_sources(settings, scale)
    ensure_dagster_home(settings)
    workspace = find_workspace()
    click.echo(f"Dagster instance: {settings.dagster_home}\nlake: {settings.lake}\nworkspace: {workspace}")
    click.echo("materialize everything with `mesh materialize` in another shell, or from the UI")
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), *dagster_args]
    # Own process group, so that Ctrl-C / SIGTERM ends dagster dev *and* its code servers.
    proc = subprocess.Popen(cmd, cwd=workspace.parent, start_new_session=True)

    stop_requested: list[float] = []

    def stop(_signum, _frame):
        if not stop_requested:
            stop_requested.append(time.monotonic())
            _signal_group(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while (code := proc.poll()) is None:
            # dagster dev has been seen to ignore SIGTERM: escalate after a grace period.
            if stop_requested and time.monotonic() - stop_requested[0] > 15:
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
