"""``mesh helm``: values for Dagster's Helm chart, one user-code deployment per domain (see :mod:`mesh_platform.deployment.helm`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

DEFAULT_IMAGE = "ghcr.io/acme-insurance/mesh-domains:0.1.0"


@click.command("helm")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="The domains' image (infra/Dockerfile), repository:tag.")
@click.option("--lake", default="s3://acme-mesh-lake/lake", show_default=True, help="MESH_LAKE of every deployment.")
@click.option("--logs-bucket", default="acme-mesh-logs", show_default=True, help="Bucket of the compute logs.")
@click.option("--region", default="eu-west-1", show_default=True)
@click.option("--iam-role-arn", "role_arn_template", default="arn:aws:iam::111122223333:role/mesh-{domain}", show_default=True,
              help="Each domain's IAM role (bound to infra/iam/<domain>.json); {domain} is its Kubernetes name.")
@click.option("--release-namespace", default="dagster", show_default=True, help="The namespace of the chart's release (webserver, daemon, code servers).")
@click.option("--reports-url", default=None, help="Where browsers reach the quality reports service (an Ingress); default: its in-cluster address.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("infra/helm/values.yaml"), show_default=True)
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
@click.option("--show-runs", is_flag=True, help="Write nothing: print the Job each domain's run would be (dagster-k8s's launcher, no cluster).")
@click.option("--json", "as_json", is_flag=True, help="With --show-runs: the whole Job manifests as JSON.")
def helm(image: str, lake: str, logs_bucket: str, region: str, role_arn_template: str, release_namespace: str, reports_url: str | None, out: Path,
         workspace: Path | None, show_runs: bool, as_json: bool) -> None:
    """Write the Helm values (one user-code deployment per workspace entry, from each domain.yaml) and
    the domains' run namespaces beside them (run-namespaces.yaml)."""
    from mesh_platform.deployment import helm as generator
    from mesh_platform.foundations.problems import ContractError
    from mesh_platform.mesh.workspace import find_workspace

    workspace = (workspace or find_workspace()).resolve()
    options = dict(image=image, lake=lake, logs_bucket=logs_bucket, region=region, role_arn_template=role_arn_template, release_namespace=release_namespace,
                   reports_url=reports_url)
    try:
        if show_runs:
            _show_runs(generator.values(workspace, **options), workspace, as_json)
            return
        written = generator.write(workspace, out, **options)
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")


def _show_runs(values: dict, workspace: Path, as_json: bool) -> None:
    try:
        from mesh_platform.deployment import run_pods
        from mesh_platform.governance.quotas import run_tags
    except ImportError as exc:  # pragma: no cover - the k8s extra is part of dev and the image
        raise click.ClickException(f"rendering run Jobs needs dagster-k8s: pip install -c requirements-lock.txt -e '.[k8s]' ({exc})") from None
    manifests = {}
    for deployment in values["dagster-user-deployments"]["deployments"]:
        domain = deployment["labels"]["mesh/domain"]
        tags = run_tags(domain, workspace.parent / "domains" / domain)
        manifests[domain] = run_pods.render_run_job(values, domain, tags=tags)
    if as_json:
        click.echo(json.dumps(manifests, indent=2, sort_keys=True))
        return
    for domain, manifest in manifests.items():
        s = run_pods.summarize(manifest)
        r = s["resources"]
        click.echo(f"{domain}:")
        click.echo(f"  namespace        {s['namespace']}")
        click.echo(f"  image            {s['image']}")
        click.echo(f"  service account  {s['service_account']}")
        click.echo(f"  cpu              {r.get('requests', {}).get('cpu')} requested, {r.get('limits', {}).get('cpu')} limit")
        click.echo(f"  memory           {r.get('requests', {}).get('memory')} requested, {r.get('limits', {}).get('memory')} limit")
        click.echo(f"  secrets          {', '.join(s['secrets'])}")
