"""Governance from the command line: ``mesh audit``, ``quarantine``, ``policies``, ``iam``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mesh_platform.cli.common import command_settings, load_mesh


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records, oldest first (as they happened).")
@click.option("--product", default=None, help="Only this product (contract id or domain/product).")
@click.option("--consumer", default=None, help="Only reads by this domain.")
@click.option("--oldest-first", is_flag=True, help="List the oldest record first (default: the newest, so `| head` shows the latest).")
@click.option("--storage", is_flag=True, help="Requests the stack's S3 server refused (its access log), with the identity that asked.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def audit(as_json: bool, product: str | None, consumer: str | None, oldest_first: bool, storage: bool, workspace: Path | None) -> None:
    """The audit log: every publish, read and quarantine of a product (from the Dagster instance), newest first.

    With --storage: what storage itself refused, whoever asked and however (code that never calls the
    platform included), from the access log of the stack's S3 server."""
    if storage:
        return storage_audit(as_json, consumer, oldest_first)
    import dagster as dg

    from mesh_platform.governance.audit import audit_records
    from mesh_platform.mesh.instance import local_instance

    settings = command_settings()
    mesh = load_mesh(workspace)
    instance = local_instance(settings)
    keys = [k for k in mesh.asset_graph()]
    keys += [dg.AssetKey([d.domain.name, n]) for d in mesh.domains if d.ok for n in d.domain.product_names]
    keys += instance.get_asset_keys()  # also assets no loaded domain defines (denied reads of unknown or private keys)
    records = audit_records(instance, sorted(set(keys), key=str), product=product, consumer=consumer)
    if as_json:
        click.echo(json.dumps({"records": [r.as_dict() for r in records]}, indent=2))
        return
    for r in (records if oldest_first else reversed(records)):
        who = {"read": f"{r.consumer} read", "denied": f"{r.consumer} DENIED", "quarantine": "quarantined", "quota": "REFUSED by quota"}.get(r.kind, "published")
        extra = f" masked={','.join(r.masked)}" if r.masked else ""
        extra += " " + ",".join(f"{reason}={n}" for reason, n in r.reasons.items()) if r.reasons else ""
        extra += f" removed={','.join(r.removed)}" if r.removed else ""
        at = f" @version {r.version}" if r.version is not None else ""
        at += f" (masked @version {r.masked_version})" if r.masked_version is not None else ""
        if r.kind == "denied":
            click.echo(f"{r.time}  {who:>22}  {r.product}: {r.reason}  run {r.run_id[:8]}")
            continue
        click.echo(f"{r.time}  {who:>22}  {r.product} {r.port}{at}  {r.rows if r.rows is not None else '?'} rows{extra}  run {r.run_id[:8]}")
    click.echo(f"{len(records)} record(s)")


def storage_audit(as_json: bool, identity: str | None, oldest_first: bool) -> None:
    from mesh_platform.deployment.s3_server import read_access_log
    from mesh_platform.deployment.stack.identities import names_by_key
    from mesh_platform.deployment.stack.layout import StackLayout, StackState

    layout = StackLayout.of(command_settings())
    state = StackState.load(layout)
    if state is None:
        raise click.ClickException(f"no stack started from {layout.root}: storage refusals are kept by the stack's S3 server")
    refused = [r for r in read_access_log(layout.access_log, names_by_key(state.identities, state.admin_key))
               if r["status"] == 403 and (identity is None or r["identity"] == identity)]
    if as_json:
        click.echo(json.dumps({"refused": refused}, indent=2))
        return
    for r in (refused if oldest_first else reversed(refused)):
        click.echo(f"{r['time']}  {r['identity']:>14} REFUSED  {r['method']:<6} s3://{r['bucket']}/{r['key']}")
    click.echo(f"{len(refused)} request(s) refused by storage ({layout.access_log})")


@click.command()
@click.argument("domain")
@click.argument("asset", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summaries.")
def quarantine(domain: str, asset: str | None, as_json: bool) -> None:
    """What DOMAIN's assets (or ASSET) rejected, run by run: rows per reason and where they are kept."""
    from mesh_platform.quality.quarantine import history
    from mesh_platform.storage.lake import Lake

    settings = command_settings()
    summaries = history(Lake(settings.lake), domain, asset)
    if as_json:
        click.echo(json.dumps({"runs": summaries}, indent=2))
        return
    for s in summaries:
        reasons = ", ".join(f"{reason}={n}" for reason, n in s["counts"].items())
        click.echo(f"{s['time']}  {s['asset']}  run {s['run_id'][:8]}  {sum(s['counts'].values())} row(s): {reasons}")
        for r in s["rejections"]:
            detail = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("reason", "rows") and v not in (None, [], ""))
            click.echo(f"    {r['reason']}: {r['rows']} row(s)" + (f" ({detail})" if detail else ""))
        click.echo(f"    {s['uri']}")
    click.echo(f"{len(summaries)} quarantine record(s)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def policies(as_json: bool, workspace: Path | None) -> None:
    """Every governance policy on every product, and every domain's grants: passed, or the problems (file and field)."""
    from mesh_platform.governance.grants import grant_problems

    command_settings()
    mesh = load_mesh(workspace)
    report = []
    for loaded in mesh.domains:
        if loaded.ok:
            for r in loaded.domain.policy_results:
                report.append({"domain": loaded.entry.location, "product": r.product, "policy": r.policy, "scope": r.scope,
                               "passed": r.passed, "problems": [str(p) for p in r.problems]})
        else:
            report.append({"domain": loaded.entry.location, "product": None, "policy": None, "scope": None,
                           "passed": False, "problems": [str(p) for p in loaded.problems]})
    for producer, problems in grant_problems([d.entry.location for d in mesh.domains]).items():
        report.append({"domain": producer, "product": None, "policy": "grants_valid", "scope": "global",
                       "passed": not problems, "problems": [str(p) for p in problems]})
    failed = [r for r in report if not r["passed"]]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "results": report}, indent=2))
    else:
        for r in report:
            subject = r["product"] or f"grants of {r['domain']}"
            if r["passed"]:
                click.echo(f"pass  {subject}: {r['policy']} ({r['scope']})")
            else:
                label = f"{subject}: {r['policy']}" if r["policy"] else f"domain {r['domain']} did not load"
                click.echo(f"FAIL  {label}")
                for problem in r["problems"]:
                    click.echo(f"        {problem}")
        click.echo(f"{len(report) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


@click.command()
@click.option("--lake", "lake_uri", default=None, help="s3:// URI of the production lake (default: MESH_LAKE if it is s3://).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("infra/iam"), show_default=True)
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def iam(lake_uri: str | None, out: Path, workspace: Path | None) -> None:
    """Generate per-domain S3 IAM policies from the grants, so storage enforces what the platform does."""
    from mesh_platform.deployment.iam import StorageGrantError, write_policies

    settings = command_settings()
    lake_uri = lake_uri or (settings.lake if settings.lake.startswith("s3://") else None)
    if not lake_uri:
        raise click.UsageError("give --lake s3://bucket/prefix (MESH_LAKE is not an s3:// URI)")
    mesh = load_mesh(workspace, report=True)
    try:
        written = write_policies(mesh, lake_uri, out)
    except StorageGrantError as e:  # raised before any file is written
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {len(written)} IAM policy document(s) to {out}")
    sys.exit(1 if mesh.problems else 0)
