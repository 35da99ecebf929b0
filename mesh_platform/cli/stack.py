"""``mesh stack up|down|status``: the production topology on this machine (see :mod:`mesh_platform.deployment.stack`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mesh_platform.deployment.stack.layout import mesh_command


@click.group()
def stack() -> None:
    """Run the mesh like production on this machine: Postgres, S3, one code server per domain, daemon, webserver."""


@stack.command("up")
@click.option("--port", "webserver_port", type=int, default=3000, show_default=True, help="dagster-webserver port (loopback).")
@click.option("--postgres-url", default=None, envvar="DAGSTER_POSTGRES_URL", help="Use this Postgres server instead of starting Debian's PostgreSQL here.")
@click.option("--automation/--no-automation", default=True, show_default=True, help="Start schedules and automation-condition sensors.")
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def stack_up(webserver_port: int, postgres_url: str | None, automation: bool, scale: float | None, workspace: Path | None) -> None:
    """Start the stack from $MESH_HOME/stack; returns once every process answers."""
    from mesh_platform.cli.common import command_settings, ensure_sources, prepare_dbt
    from mesh_platform.deployment.stack.layout import Options, StackError
    from mesh_platform.deployment.stack.lifecycle import up
    from mesh_platform.mesh.workspace import find_workspace

    settings = command_settings()
    ensure_sources(settings, scale)
    prepare_dbt()
    workspace = (workspace or find_workspace()).resolve()
    try:
        state = up(settings, workspace, Options(webserver_port, postgres_url, automation), progress=click.echo)
        from mesh_platform.deployment.stack.webserver import locations

        statuses = locations(state.webserver, workspace.parent)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    failed = [s for s in statuses if not s.loaded]
    for s in statuses:
        click.echo(f"  {s.describe()}", err=not s.loaded)
    for line, to_stderr in up_hints(state.webserver, len(statuses), [s.name for s in failed]):
        click.echo(line, err=to_stderr)
    sys.exit(1 if failed else 0)


def up_hints(webserver: str, domains: int, failed: list[str]) -> list[tuple[str, bool]]:
    """What `mesh stack up` says last (each line, and whether it goes to stderr): every command it
    suggests names this `mesh` so that it runs in any shell (:func:`mesh_command`)."""
    mesh = mesh_command()
    lines = [(f"stack up: {webserver}  ({domains - len(failed)} of {domains} domain(s) loaded); stop it with `{mesh} stack down`", False),
             (f"point this shell's mesh commands at it with eval \"$({mesh} stack env)\", then e.g. `{mesh} materialize -s policies`", False)]
    if failed:
        lines.append((f"the other domains run; fix {', '.join(failed)} and `{mesh} stack restart {failed[0]}`", True))
    return lines


@stack.command("down")
def stack_down() -> None:
    """Stop every process `mesh stack up` started (by pid) and check that no port is left open."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.deployment.stack.layout import StackError
    from mesh_platform.deployment.stack.lifecycle import down

    try:
        down(command_settings(), progress=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("restart")
@click.argument("domain")
def stack_restart(domain: str) -> None:
    """Start DOMAIN's code server again (after a crash or a fix) and reload its location."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.deployment.stack.layout import StackError
    from mesh_platform.deployment.stack.lifecycle import restart

    try:
        found = restart(command_settings(), domain, progress=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if found.loaded else 1)


@stack.command("status")
@click.option("--json", "as_json", is_flag=True)
def stack_status(as_json: bool) -> None:
    """Which processes of the stack run, and whether each domain's code location loads; exits 1 while anything is down."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.deployment.stack.lifecycle import status

    report = status(command_settings())
    down = any(not p["alive"] for p in report["processes"]) or any(not loc["loaded"] for loc in report["locations"])
    if as_json:
        click.echo(json.dumps(report, indent=2))
        sys.exit(1 if down else 0)
    if not report["processes"]:
        click.echo("no stack started here")
        return
    for p in report["processes"]:
        click.echo(f"{'up  ' if p['alive'] else 'DOWN'}  {p['name']:<26} port {p['port'] or '-':<6} {p['log']}")
    for loc in report["locations"]:
        click.echo(f"{'ok  ' if loc['loaded'] else 'FAIL'}  location {loc['name']}" + (f": {loc['error']}" if loc["error"] else ""))
    if report.get("webserver"):
        click.echo(f"webserver: {report['webserver']}")
    if down:
        sys.exit(1)  # something is down: scripts and health checks see it


@stack.command("env")
def stack_env() -> None:
    """Shell exports that point `mesh` commands at the running stack: `eval "$(mesh stack env)"`.

    Then `mesh materialize` queues its runs on the stack's instance (Postgres) for the stack's code
    servers, and `mesh audit`, `mesh quotas`, `mesh usage` read the stack's instance and S3 lake.
    """
    import shlex

    from mesh_platform.cli.common import command_settings
    from mesh_platform.deployment.stack.layout import StackLayout, StackState

    layout = StackLayout.of(command_settings())
    state = StackState.load(layout)
    if state is None or not state.env:
        raise click.ClickException(f"no stack started from {layout.root}: `{mesh_command()} stack up` first")
    for name, value in sorted(state.env.items()):
        click.echo(f"export {name}={shlex.quote(value)}")


@stack.command("matrix")
@click.option("--json", "as_json", is_flag=True, help="Every finding, as JSON.")
def stack_matrix(as_json: bool) -> None:
    """Measure what each domain's code server can read and write in the stack's storage (with its own
    keys and uid), and whether it reaches the others' keys: the identity matrix of docs/governance.md."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.deployment.stack.layout import StackLayout, StackState
    from mesh_platform.deployment.stack.probe import markdown, measure

    layout = StackLayout.of(command_settings())
    state = StackState.load(layout)
    if state is None or not state.identities:
        raise click.ClickException(f"no stack started from {layout.root}: `{mesh_command()} stack up` first")
    matrix = measure(state, layout)
    if as_json:
        click.echo(json.dumps(matrix, indent=2))
        return
    click.echo("storage (R: read, W: write), each domain with its own code server's keys:")
    click.echo(markdown(matrix))
    for domain, found in matrix.items():
        reached = [f["path"] for f in found["files"] if f["readable"]]
        released = [f"{p['token']}: {'released' if p['released'] else 'refused'}" for p in found["privacy"]]
        click.echo(f"{domain}: other identities' environments, homes and keys reached: {', '.join(reached) or 'none'}; "
                   f"privacy release: {'; '.join(released) or 'no service'}")
