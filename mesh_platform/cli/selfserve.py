"""``mesh new`` (scaffold a domain or a product), ``mesh grants approve``, ``mesh reports serve``."""

from __future__ import annotations

from pathlib import Path

import click


def _project_root() -> Path:
    from mesh_platform.mesh.workspace import find_workspace

    try:
        return find_workspace().parent
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


def _apply(changes) -> None:
    from mesh_platform.foundations.problems import display_path

    for path in changes.apply():
        click.echo(f"wrote {display_path(path)}")
    for note in changes.notes:
        click.echo(note)


@click.group()
def new() -> None:
    """Scaffold a domain or a product: everything it needs, passing `mesh validate` and its own test."""


@new.command("domain")
@click.argument("name")
@click.option("--kind", type=click.Choice(["source-aligned", "consumer-aligned", "aggregate"]), default="consumer-aligned", show_default=True)
@click.option("--team", required=True, help="The team that owns the domain.")
@click.option("--owner", "owners", multiple=True, required=True, help="An owner (team:... or e-mail); repeat. Owners approve grants on the domain's products.")
@click.option("--description", default=None)
def new_domain(name: str, kind: str, team: str, owners: tuple[str, ...], description: str | None) -> None:
    """Create domain NAME: descriptor, contracts/, grants.yaml, definitions.py, a test, workspace and dg entries."""
    from mesh_platform.selfserve.changes import ScaffoldError
    from mesh_platform.selfserve.new_domain import new_domain as plan

    try:
        changes = plan(_project_root(), name, kind=kind, team=team, owners=list(owners), description=description)
    except ScaffoldError as exc:
        raise click.ClickException(f"{exc} (nothing written)") from None
    _apply(changes)
    _refresh_iam(changes.root, [name])


def _refresh_iam(root: Path, domains: list[str]) -> None:
    """Keep the committed IAM documents (infra/iam, generated from the grants) in step."""
    from mesh_platform.foundations.problems import display_path
    from mesh_platform.selfserve.iam import refresh_iam

    for path in refresh_iam(root, domains):
        click.echo(f"wrote {display_path(path)} (as `mesh iam` generates it)")


@new.command("product")
@click.argument("domain")
@click.argument("name")
@click.option("--input", "inputs", multiple=True, metavar="PRODUCER.PRODUCT[@MAJOR][:col,...]", help="An input port; repeat for several. The schema starts from its columns.")
@click.option("--purpose", default=None, help="What the product is for (its contract's purpose and the grant requests' purpose).")
@click.option("--expires", default=None, metavar="YYYY-MM-DD", help="Expiry of the grant requests (required for restricted inputs).")
def new_product(domain: str, name: str, inputs: tuple[str, ...], purpose: str | None, expires: str | None) -> None:
    """Add product NAME to DOMAIN: contract, transform, test, and a pending grant request to each producer."""
    from mesh_platform.selfserve.changes import ScaffoldError
    from mesh_platform.selfserve.new_product import new_product as plan

    try:
        changes = plan(_project_root(), domain, name, list(inputs), purpose=purpose, expires=expires)
    except ScaffoldError as exc:
        raise click.ClickException(f"{exc} (nothing written)") from None
    _apply(changes)


@click.group()
def grants() -> None:
    """Grant requests: approve what consumers asked for."""


@grants.command("approve")
@click.argument("producer")
@click.argument("consumer")
@click.option("--product", default=None, help="Only the request on this product.")
def grants_approve(producer: str, consumer: str, product: str | None) -> None:
    """Approve CONSUMER's pending grant requests in PRODUCER's grants.yaml (the producer's owners do this)."""
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.foundations.problems import ContractError
    from mesh_platform.governance.grants import approve_grants, grants_path

    root = _project_root() / "domains"
    if not (root / producer / "domain.yaml").exists():
        root = default_domains_root()
    try:
        approved = approve_grants(producer, consumer, product, root)
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    if not approved:
        raise click.ClickException(f"{grants_path(producer, root)} has no pending request of {consumer!r}" + (f" on {product!r}" if product else ""))
    click.echo(f"approved {len(approved)} grant(s) of {consumer!r} in {grants_path(producer, root)}: " + ", ".join(f"grants[{i}]" for i in approved))
    _refresh_iam(root.parent, [consumer])


@click.group()
def reports() -> None:
    """Quality reports (GX Data Docs pages) kept in the lake."""


@reports.command("render")
def reports_render() -> None:
    """Render the local lake's pending quality reports as GX results and Data Docs pages (a run writes
    only the report's data; `mesh reports serve` renders a page when it is first asked for)."""
    from mesh_platform.foundations.settings import MeshSettings
    from mesh_platform.quality.reports import render_all

    settings = MeshSettings.from_env()
    if settings.lake.startswith("s3://"):
        raise click.ClickException("the lake is on S3: its runs render their reports themselves")
    written = render_all(settings.lake)
    click.echo(f"rendered {len(written) // 2} quality report(s) in {settings.lake}")


@reports.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on (0.0.0.0: reachable from other machines).")
@click.option("--port", type=int, default=None, help="Port (default: MESH_REPORTS_PORT or 3001, the port the links name).")
def reports_serve(host: str, port: int | None) -> None:
    """Serve the lake's quality reports over HTTP (only `<domain>/<product>/_quality/*.html|json`, never data).

    A page no run rendered is rendered when first asked for: written beside its report in a local
    lake, kept in memory for an S3 lake (read with the service's own read-only keys)."""
    import os

    from mesh_platform.foundations.settings import MeshSettings
    from mesh_platform.quality.reports import DEFAULT_PORT, make_server

    settings = MeshSettings.from_env()
    port = port or int(os.environ.get("MESH_REPORTS_PORT") or DEFAULT_PORT)
    server = make_server(settings.lake, host, port)
    click.echo(f"serving quality reports of {settings.lake} on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
