"""``mesh dbt prepare`` / ``mesh dbt sync``: dbt domains' manifests and the dbt contracts generated from ODCS."""

from __future__ import annotations

import sys

import click

from mesh_platform.cli.common import dbt_projects


@click.group()
def dbt() -> None:
    """dbt-implemented domains: prepare manifests, sync dbt contracts from ODCS contracts."""


@dbt.command("prepare")
@click.option("--force", is_flag=True, help="Parse even when the manifest is up to date.")
def dbt_prepare(force: bool) -> None:
    """Parse every dbt domain's project into target/manifest.json (done at setup, not at load)."""
    for project in dbt_projects():
        path = project.prepare(force=force)
        click.echo(f"prepared {path}")


@dbt.command("sync")
@click.option("--check", is_flag=True, help="Only check; exit 1 if the dbt contracts are out of date.")
def dbt_sync(check: bool) -> None:
    """Write each dbt domain's models/_mesh_contracts.yml from its ODCS contracts."""
    from mesh_platform.contracts.loader import load_contract
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.dbt.contracts import sync

    stale = []
    for project in dbt_projects():
        domain = project.path.name
        sql_models = sorted(p.stem for p in (project.path / "models").rglob("*.sql"))
        contracts = [load_contract(default_domains_root() / domain / "contracts" / f"{m}.yaml") for m in sql_models]
        if not sync(project.path, contracts, check=check):
            stale.append(project.path)
            click.echo(f"{'out of date' if check else 'wrote'}: {project.path / 'models' / '_mesh_contracts.yml'}")
    if check and stale:
        sys.exit(1)
