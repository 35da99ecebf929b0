"""Looking at the mesh: ``mesh validate``, ``catalog``, ``search``, ``quotas``, ``usage``, ``lineage``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mesh_platform.cli.common import command_settings, load_mesh, prepare_dbt


@click.command()
@click.argument("contracts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path), help="workspace.yaml (default: nearest)")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(contracts: tuple[Path, ...], workspace: Path | None, as_json: bool) -> None:
    """Check every contract and load every domain; report each problem with file and field.

    With CONTRACTS, check only those contract files. Exits 1 when anything is wrong.
    """
    from mesh_platform.mesh.validation import validate_files, validate_mesh

    command_settings()
    if not contracts:
        prepare_dbt()
    from mesh_platform.foundations.problems import ContractError

    try:
        report = validate_files(list(contracts)) if contracts else validate_mesh(workspace, apart=True)
    except ContractError as exc:  # the workspace file itself
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "problems": [p.__dict__ for p in report.problems], "pending": report.pending, "warnings": report.warnings}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"error: {problem}", err=True)
        for pending in report.pending:
            click.echo(f"pending: {pending}", err=True)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable catalog.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def catalog(as_json: bool, workspace: Path | None) -> None:
    """List every data product: owner, version, ports, lineage, last materialization."""
    from mesh_platform.mesh.catalog import build_catalog
    from mesh_platform.mesh.instance import local_instance

    settings = command_settings()
    mesh = load_mesh(workspace, report=True)
    entries = build_catalog(mesh, settings, local_instance(settings))
    if as_json:
        click.echo(json.dumps({"products": [e.as_dict() for e in entries]}, indent=2))
        return
    for e in entries:
        click.echo(f"{e.key}  v{e.version} ({e.status}, {e.access_level or 'no access level'})  owners: {', '.join(e.owners)}")
        click.echo(f"    {e.description}")
        click.echo(f"    output port: {e.output_port}")
        for port in e.input_ports:
            kind = " (differentially private aggregates)" if port["aggregate"] else ""
            click.echo(f"    input port: {port['product']} v{port['major']}{kind}")
        click.echo(f"    upstream: {', '.join(e.upstream) or '-'}   downstream: {', '.join(e.downstream) or '-'}")
        last = f"{e.last_materialized} ({e.row_count:,} rows)" if e.last_materialized and e.row_count is not None else (e.last_materialized or "never")
        click.echo(f"    last materialized: {last}")


@click.command()
@click.argument("text", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable hits.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["domain", "product", "column"]), help="Only hits of this kind (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--reindex", is_flag=True, help="Rebuild the index even if no definition changed.")
def search(text: tuple[str, ...], as_json: bool, kinds: tuple[str, ...], limit: int, reindex: bool) -> None:
    """Search domains, products and columns: names, descriptions, tags, owners, classifications.

    Ranked; each product shows its last materialization and freshness from the Dagster instance.
    """
    from mesh_platform.mesh.instance import local_instance
    from mesh_platform.mesh.search import SearchError, ensure_index
    from mesh_platform.mesh.search import search as run

    settings = command_settings()
    query = " ".join(text)
    try:
        if reindex:
            ensure_index(force=True, home=settings.home)
        result = run(query, local_instance(settings), limit=limit, kinds=kinds, home=settings.home)
    except SearchError as exc:
        raise click.UsageError(str(exc)) from None
    for problem in result["problems"]:
        click.echo(f"warning: not indexed: {problem['file']}: {problem['field']}: {problem['message']}", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for hit in result["hits"]:
        data = hit["data"]
        if hit["kind"] == "domain":
            click.echo(f"domain   {hit['key']}  ({data['kind']}, {data['team']})  owners: {', '.join(data['owners'])}")
            click.echo(f"         {data['description']}")
            continue
        when = f"last materialized {hit['last_materialized']} ({hit['freshness']})" if hit["last_materialized"] else (hit["freshness"] or "")
        if hit["kind"] == "product":
            extra = f"; classified {', '.join(data['classifications'])}" if data["classifications"] else ""
            click.echo(f"product  {hit['key']}  v{data['version']} ({data['status']}, access {data['access_level'] or 'not set'}{extra})  owners: {', '.join(data['owners'])}")
            click.echo(f"         {data['description'] or ''}")
        else:
            extra = f", {data['classification']}" if data["classification"] else ""
            click.echo(f"column   {hit['key']}  {data['type']}{extra}")
            click.echo(f"         {data['description'] or ''}")
        click.echo(f"         {when}")
    matched = "" if result["matched"] == "all" else " (no hit has every word: hits with any of them)"
    click.echo(f"{len(result['hits'])} hit(s) for {query!r}{matched}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def quotas(as_json: bool, workspace: Path | None) -> None:
    """Each domain's quotas with their use and percentage; per product, its last publish."""
    from mesh_platform.governance.quotas import NOT_MEASURED, report, show
    from mesh_platform.storage.lake import Lake

    settings = command_settings()
    mesh = load_mesh(workspace, report=True)
    from mesh_platform.governance.privacy import ledger_url
    from mesh_platform.mesh.instance import local_instance

    rows = report(mesh, Lake(settings.lake), local_instance(settings), ledger_url(settings.home))
    if as_json:
        click.echo(json.dumps({"domains": rows}, indent=2, default=str))
        return
    for d in rows:
        click.echo(f"{d['domain']}")
        for q in d["quotas"]:
            limit = show(q["quota"], q["limit"])
            if q["use"] is None:  # held elsewhere (run monitoring, the run's pod): say where
                click.echo(f"    {q['quota']:<18} limit {limit:<14} {NOT_MEASURED.get(q['quota'], 'not measured')}")
                continue
            pct = f"{q['percent']:5.1f}%" if q["percent"] is not None else ""
            click.echo(f"    {q['quota']:<18} limit {limit:<14} use {show(q['quota'], q['use']):<14} {pct}".rstrip())
        for p in d["products"]:
            stored = show("storage_bytes", p["stored_bytes"])
            if p["rows"] is None and p["bytes"] is None:
                click.echo(f"    {p['product']}: never published; stored {stored}")
                continue
            rows = f"{p['rows']:,} rows" if p["rows"] is not None else "rows not recorded"
            size = show("storage_bytes", p["bytes"]) if p["bytes"] is not None else "size not recorded"
            click.echo(f"    {p['product']}: last publish {rows}, {size}; stored {stored}")
    if mesh.problems:
        sys.exit(1)


@click.command()
@click.option("--since", "since_days", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Window, in days.")
@click.option("--domain", "only", default=None, help="Only this domain.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def usage(since_days: float, only: str | None, as_json: bool, workspace: Path | None) -> None:
    """Runs, compute seconds, rows, bytes stored, reads per consumer and estimated cost, per product and domain."""
    from mesh_platform.mesh.instance import local_instance
    from mesh_platform.mesh.usage import mesh_usage
    from mesh_platform.storage.lake import Lake

    settings = command_settings()
    mesh = load_mesh(workspace, report=True)
    report = mesh_usage(mesh, Lake(settings.lake), local_instance(settings), since_days)
    if only:
        report["domains"] = [d for d in report["domains"] if d["domain"] == only]
        if not report["domains"]:
            raise click.ClickException(f"no loaded domain {only!r}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"last {since_days:g} day(s); prices: {report['prices']['cpu_second']} USD per CPU-second, {report['prices']['gb_month']} USD per GB-month")
    for d in report["domains"]:
        click.echo(f"{d['domain']}: {d['runs']} run(s), {d['compute_seconds']:.1f} s compute, {d['rows_published']:,} rows, {d['bytes_stored']:,} bytes stored, {d['reads']} read(s), ~{d['cost']:.4f} USD")
        for p in d["products"]:
            reads = ", ".join(f"{c} {n}" for c, n in sorted(p["reads"].items())) or "none"
            click.echo(f"    {p['product']}: {p['runs']} run(s), {p['compute_seconds']:.1f} s, {p['rows_published']:,} rows, {p['bytes_stored']:,} bytes; reads: {reads}; ~{p['cost']:.4f} USD")


@click.group()
def lineage() -> None:
    """Lineage: the mesh as a graph; the OpenLineage events of runs (see docs/lineage.md)."""


@lineage.command("export")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder to write into (default: $MESH_HOME/lineage, not the project folder).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["json", "graphml"]), help="Only this format (repeatable; default both).")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def lineage_export(out: Path | None, formats: tuple[str, ...], workspace: Path | None) -> None:
    """Write the mesh (domains, products, columns, consumers, grants) as mesh-lineage.json and mesh-lineage.graphml."""
    from mesh_platform.lineage.graph import export, mesh_graph

    settings = command_settings()
    out = out if out is not None else Path(settings.home) / "lineage"
    mesh = load_mesh(workspace)
    graph = mesh_graph(mesh, lake=settings.lake)
    for problem in graph["problems"]:
        click.echo(f"warning: {problem['file']}: {problem['field']}: {problem['message']}", err=True)
    try:
        written = export(graph, out, formats or ("json", "graphml"))
    except OSError as exc:
        raise click.ClickException(f"cannot write the lineage graph to {out}: {exc.strerror or exc}") from None
    kinds = {}
    for node in graph["nodes"]:
        kinds[node["type"]] = kinds.get(node["type"], 0) + 1
    counts = ", ".join(f"{n} {t}(s)" for t, n in kinds.items())
    click.echo(f"{counts}, {len(graph['edges'])} edge(s): wrote {', '.join(str(Path(p).absolute()) for p in written)}")


@lineage.command("column")
@click.argument("column")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path), default=None)
def lineage_column(column: str, workspace: Path | None) -> None:
    """Where COLUMN (domain.product.column) comes from and what is computed from it, across domains:
    as the contracts declare it (transformSourceObjects) and, for dbt models, as their SQL says
    (docs/lineage.md)."""
    from mesh_platform.contracts.registry import mesh_registry
    from mesh_platform.lineage.columns import column_graph, dbt_column_graph, trace

    command_settings()
    registry = mesh_registry()
    product, _, name = column.rpartition(".")
    try:
        contract = registry.get(product)
    except LookupError as exc:
        raise click.ClickException(f"{column}: {exc}") from None
    if name not in contract.column_names:
        raise click.ClickException(f"{column}: {product} has no column {name!r} (columns: {', '.join(contract.column_names)})")
    mesh = load_mesh(workspace)
    plans = [d.domain.last_plan.dbt for d in mesh.domains if d.domain is not None and d.domain.last_plan is not None and d.domain.last_plan.dbt is not None]
    graph = column_graph(registry.full)
    from_sql, notes = dbt_column_graph(plans)
    for target, sources in from_sql.items():
        graph.setdefault(target, set()).update(sources)
    for note in notes:
        click.echo(f"warning: no column lineage from SQL: {note}", err=True)
    upstream, downstream = trace(graph, column)
    click.echo(column)
    for title, found in (("upstream (computed from)", upstream), ("downstream (computed from it)", downstream)):
        click.echo(f"{title}:")
        for depth, other in found:
            click.echo(f"  {'  ' * (depth - 1)}{other}")
        if not found:
            click.echo("  none known")


@lineage.command("emit")
@click.argument("run_ids", nargs=-1, required=True)
def lineage_emit(run_ids: tuple[str, ...]) -> None:
    """(Re)send the OpenLineage events of runs already in the Dagster instance (e.g. runs from before lineage was set up)."""
    from mesh_platform.lineage.emit import disabled, emit_run
    from mesh_platform.mesh.instance import local_instance

    settings = command_settings()
    if disabled():
        raise click.ClickException("lineage is disabled (MESH_LINEAGE=off or OPENLINEAGE_DISABLED=true)")
    instance = local_instance(settings)
    for run_id in run_ids:
        try:
            events = emit_run(instance, run_id, settings)
        except LookupError as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
        click.echo(f"run {run_id}: sent {', '.join(e.eventType.value for e in events)}")
