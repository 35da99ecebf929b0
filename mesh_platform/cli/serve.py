"""``mesh serve`` and ``mesh tokens``: output ports as endpoints for consumers outside Dagster (docs/serving.md)."""

from __future__ import annotations

import signal
import threading

import click


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--http-port", type=int, default=8470, show_default=True)
@click.option("--flight-port", type=int, default=8471, show_default=True)
@click.option("--memory-limit", default="1GB", show_default=True, help="DuckDB memory per SQL query.")
@click.option("--threads", type=int, default=2, show_default=True, help="DuckDB threads per SQL query.")
def serve(host: str, http_port: int, flight_port: int, memory_limit: str, threads: int) -> None:
    """Serve every product's port over HTTP and Arrow Flight, through the same access decision as a
    Dagster read; callers prove who they are with a token (`mesh tokens issue CONSUMER`)."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.mesh.instance import ensure_dagster_home
    from mesh_platform.serving.run import start
    from mesh_platform.serving.tokens import jwks_path

    settings = command_settings()
    ensure_dagster_home(settings)
    running = start(settings, default_domains_root(), host, http_port, flight_port, memory_limit, threads)
    click.echo(f"serving products: HTTP {running.http.url}  Flight {running.flight.url}")
    click.echo(f"tokens verified against {jwks_path(settings.home)}; every request is audited (`mesh audit`)")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop()


@click.group("tokens")
def tokens() -> None:
    """Tokens for `mesh serve` (local use; in production the identity provider issues them)."""


@tokens.command("issue")
@click.argument("consumer")
@click.option("--person", default=None, help="A person of the consumer domain (the token's subject).")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Seconds until it expires.")
def issue(consumer: str, person: str | None, ttl: int) -> None:
    """Sign a token for CONSUMER (a domain of the mesh) with the mesh home's key; the token is the last line."""
    from mesh_platform.cli.common import command_settings
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.serving.tokens import issue as sign

    settings = command_settings()
    if not (default_domains_root() / consumer / "domain.yaml").exists():
        raise click.ClickException(f"no domain {consumer!r} in this mesh")
    click.echo(f"token for {person or consumer} of domain {consumer}, valid {ttl} s:", err=True)
    click.echo(sign(settings.home, consumer, person, ttl))
