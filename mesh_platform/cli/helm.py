"""``mesh helm``: values for Dagster's Helm chart, one user-code deployment per domain (see :mod:`mesh_platform.helm`)."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_IMAGE = "ghcr.io/acme-insurance/mesh-domains:0.1.0"


@click.command("helm")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="The domains' image (infra/Dockerfile), repository:tag.")
@click.option("--lake", default="s3://acme-mesh-lake/lake", show_default=True, help="MESH_LAKE of every deployment.")
@click.option("--logs-bucket", default="acme-mesh-logs", show_default=True, help="Bucket of the compute logs.")
@click.option("--region", default="eu-west-1", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("infra/helm/values.yaml"), show_default=True)
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def helm(image: str, lake: str, logs_bucket: str, region: str, out: Path, workspace: Path | None) -> None:
    """Write the Helm values: one user-code deployment per workspace entry, from each domain.yaml."""
    from mesh_platform import helm as generator
    from mesh_platform.problems import ContractError
    from mesh_platform.workspace import find_workspace

    workspace = (workspace or find_workspace()).resolve()
    try:
        written = generator.write(workspace, out, image=image, lake=lake, logs_bucket=logs_bucket, region=region)
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written}")
