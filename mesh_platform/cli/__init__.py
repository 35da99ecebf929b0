"""The ``mesh`` command line: validate, simulate, materialize, catalog, dev.

Every command reads the same environment as the code locations (``MESH_HOME``, ``MESH_LAKE``,
``MESH_SOURCES``, ``DAGSTER_HOME``; see :mod:`mesh_platform.settings`) once, in :func:`_settings`,
passes the settings down, and pins them for the child processes it starts, so the command line and
``dagster dev`` always agree on where things are.
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
    """The command's settings: read once (the command line is an entry point), pinned for its children."""
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


def _interrupt_when_dagster_captured(stop, received: list[int], main_thread: int) -> None:
    """While a run executes in this process, Dagster replaces the SIGINT/SIGTERM handlers with one that
    only sets a flag, which its in-process executor never reads while it waits for a pool slot (the
    run would wait for ever). This thread watches that flag and raises KeyboardInterrupt in the main
    thread, which ends the run; the command then cancels it and frees its slots."""
    import ctypes

    from dagster._utils.interrupts import check_captured_interrupt

    while not stop.wait(0.2):  # ends with the command (daemon thread) or once stopping
        if check_captured_interrupt():
            received.append(signal.SIGTERM)  # Dagster maps both to one handler; which one is not kept
            stop.set()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main_thread), ctypes.py_object(KeyboardInterrupt))
            return


def _run_stoppably(execute, instance):
    """Run ``execute(stop)`` so that SIGTERM and SIGINT stop it: the run in progress is interrupted,
    nothing further starts, this process's unfinished runs are marked canceled with their pool
    slots freed (:mod:`mesh_platform.run_cleanup`), and the command exits 130 (SIGINT) or 143 (SIGTERM)."""
    import threading

    from mesh_platform.run_cleanup import release_own_runs

    stop = threading.Event()
    received: list[int] = []

    def interrupt(signum, frame):
        received.append(signum)
        stop.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    watchdog = threading.Thread(target=_interrupt_when_dagster_captured, args=(stop, received, threading.main_thread().ident), daemon=True)
    watchdog.start()
    try:
        result = execute(stop)
    except KeyboardInterrupt:
        stop.set()
        if not received:
            received.append(signal.SIGINT)
        result = None
    finally:
        interrupted = stop.is_set()
        stop.set()  # ends the watchdog
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        name = signal.Signals(received[0]).name if received else "a signal"
        released = release_own_runs(instance, name)
        click.echo(f"stopped by {name}: {len(released)} unfinished run(s) marked canceled, their pool slots freed", err=True)
        raise SystemExit(128 + (received[0] if received else signal.SIGINT))
    return result


def _load_mesh(workspace: Path | None, report: bool = False):
    """The mesh of ``workspace`` (default: nearest); an unreadable workspace file is a clean error naming it.

    With ``report``, each domain's problem is printed as an error (the other domains still load).
    """
    from mesh_platform.problems import ContractError
    from mesh_platform.workspace import Mesh

    _prepare_dbt(workspace)  # a dbt domain loads from its manifest: a fresh clone has none yet
    try:
        mesh = Mesh.load(workspace)
    except ContractError as exc:
        raise click.ClickException(str(exc)) from None
    if report:
        for problem in mesh.problems:
            click.echo(f"error: {problem}", err=True)
    return mesh


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
    if not contracts:
        _prepare_dbt()
    from mesh_platform.problems import ContractError

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


@main.command()
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplies every entity count.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--rejects", is_flag=True, help="Add a few bad source rows the domains must quarantine (a file with an extra column, unknown policies, a conflicting duplicate).")
def simulate(scale: float, seed: int, rejects: bool) -> None:
    """(Re)generate the simulated operational sources (policy DB, claims landing zone, chat export)."""
    from mesh_platform.simulation import simulate as run

    settings = _settings()
    summary = run(settings.sources, scale=scale, seed=seed, rejects=rejects)
    click.echo(json.dumps(summary, indent=2))


@main.command()
@click.option("--select", "-s", "selection", default=None, help="Comma-separated domain or domain/asset; * before/after for upstream/downstream.")
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
    from mesh_platform.instance import local_instance
    from mesh_platform.materialize import SelectionError, check_days, materialize as run, select

    if partition and (first or last):
        raise click.UsageError("give --partition DAY, or --from DAY --to DAY, not both")
    if bool(first) != bool(last):
        raise click.UsageError("--from and --to go together (the same day for one day)")
    days = (partition, partition) if partition else ((first, last) if first else None)

    settings = _settings()
    _ensure_sources(settings, scale)
    mesh = _load_mesh(workspace, report=True)
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
        report = _run_stoppably(lambda stop: run(mesh, keys, instance, progress=click.echo, days=days, stop=stop), instance)
    else:
        from mesh_platform.submission import QueuedRunner, SubmissionError, check_daemon, workspace_file

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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable catalog.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def catalog(as_json: bool, workspace: Path | None) -> None:
    """List every data product: owner, version, ports, lineage, last materialization."""
    from mesh_platform.catalog import build_catalog
    from mesh_platform.instance import local_instance

    settings = _settings()
    mesh = _load_mesh(workspace, report=True)
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


@main.command()
@click.argument("text", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable hits.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["domain", "product", "column"]), help="Only hits of this kind (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--reindex", is_flag=True, help="Rebuild the index even if no definition changed.")
def search(text: tuple[str, ...], as_json: bool, kinds: tuple[str, ...], limit: int, reindex: bool) -> None:
    """Search domains, products and columns: names, descriptions, tags, owners, classifications.

    Ranked; each product shows its last materialization and freshness from the Dagster instance.
    """
    from mesh_platform.instance import local_instance
    from mesh_platform.search import SearchError, ensure_index, search as run

    settings = _settings()
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


@main.command()
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
        return _storage_audit(as_json, consumer, oldest_first)
    import dagster as dg

    from mesh_platform.governance.audit import audit_records
    from mesh_platform.instance import local_instance

    settings = _settings()
    mesh = _load_mesh(workspace)
    instance = local_instance(settings)
    keys = [k for k in mesh.asset_graph()]
    keys += [dg.AssetKey([d.domain.name, n]) for d in mesh.domains if d.ok for n in d.domain.product_names]
    keys += instance.get_asset_keys()  # also assets no loaded domain defines (denied reads of unknown or private keys)
    records = audit_records(instance, sorted(set(keys), key=str), product=product, consumer=consumer)
    if as_json:
        click.echo(json.dumps({"records": [r.as_dict() for r in records]}, indent=2))
        return
    for r in (records if oldest_first else reversed(records)):
        who = {"read": f"{r.consumer} read", "denied": f"{r.consumer} DENIED", "quarantine": "quarantined"}.get(r.kind, "published")
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


def _storage_audit(as_json: bool, identity: str | None, oldest_first: bool) -> None:
    from mesh_platform.s3_server import read_access_log
    from mesh_platform.stack import StackLayout, StackState
    from mesh_platform.stack_identities import names_by_key

    layout = StackLayout.of(_settings())
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def quotas(as_json: bool, workspace: Path | None) -> None:
    """Each domain's quotas with their use and percentage; per product, its last publish."""
    from mesh_platform.io.lake import Lake
    from mesh_platform.quotas import NOT_MEASURED, report, show

    settings = _settings()
    mesh = _load_mesh(workspace, report=True)
    from mesh_platform.instance import local_instance

    from mesh_platform.governance.privacy import ledger_url

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


@main.command()
@click.option("--since", "since_days", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Window, in days.")
@click.option("--domain", "only", default=None, help="Only this domain.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def usage(since_days: float, only: str | None, as_json: bool, workspace: Path | None) -> None:
    """Runs, compute seconds, rows, bytes stored, reads per consumer and estimated cost, per product and domain."""
    from mesh_platform.instance import local_instance
    from mesh_platform.io.lake import Lake
    from mesh_platform.usage import mesh_usage

    settings = _settings()
    mesh = _load_mesh(workspace, report=True)
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


@main.command()
@click.argument("domain")
@click.argument("asset", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summaries.")
def quarantine(domain: str, asset: str | None, as_json: bool) -> None:
    """What DOMAIN's assets (or ASSET) rejected, run by run: rows per reason and where they are kept."""
    from mesh_platform.io.lake import Lake
    from mesh_platform.quarantine import history

    settings = _settings()
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def policies(as_json: bool, workspace: Path | None) -> None:
    """Every governance policy on every product, and every domain's grants: passed, or the problems (file and field)."""
    from mesh_platform.governance.grants import grant_problems

    _settings()
    mesh = _load_mesh(workspace)
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


@main.command()
@click.option("--lake", "lake_uri", default=None, help="s3:// URI of the production lake (default: MESH_LAKE if it is s3://).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("infra/iam"), show_default=True)
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def iam(lake_uri: str | None, out: Path, workspace: Path | None) -> None:
    """Generate per-domain S3 IAM policies from the grants, so storage enforces what the platform does."""
    from mesh_platform.iam import StorageGrantError, write_policies

    settings = _settings()
    lake_uri = lake_uri or (settings.lake if settings.lake.startswith("s3://") else None)
    if not lake_uri:
        raise click.UsageError("give --lake s3://bucket/prefix (MESH_LAKE is not an s3:// URI)")
    mesh = _load_mesh(workspace, report=True)
    try:
        written = write_policies(mesh, lake_uri, out)
    except StorageGrantError as e:  # raised before any file is written
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {len(written)} IAM policy document(s) to {out}")
    sys.exit(1 if mesh.problems else 0)


@main.group()
def lineage() -> None:
    """Lineage: the mesh as a graph; the OpenLineage events of runs (see docs/lineage.md)."""


@lineage.command("export")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder to write into (default: $MESH_HOME/lineage, not the project folder).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["json", "graphml"]), help="Only this format (repeatable; default both).")
@click.option("--workspace", "-w", type=click.Path(exists=True, path_type=Path))
def lineage_export(out: Path | None, formats: tuple[str, ...], workspace: Path | None) -> None:
    """Write the mesh (domains, products, columns, consumers, grants) as mesh-lineage.json and mesh-lineage.graphml."""
    from mesh_platform.lineage.graph import export, mesh_graph

    settings = _settings()
    out = out if out is not None else Path(settings.home) / "lineage"
    mesh = _load_mesh(workspace)
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
    from mesh_platform.column_lineage import column_graph, dbt_column_graph, trace
    from mesh_platform.contracts.registry import mesh_registry

    _settings()
    registry = mesh_registry()
    product, _, name = column.rpartition(".")
    try:
        contract = registry.get(product)
    except LookupError as exc:
        raise click.ClickException(f"{column}: {exc}") from None
    if name not in contract.column_names:
        raise click.ClickException(f"{column}: {product} has no column {name!r} (columns: {', '.join(contract.column_names)})")
    mesh = _load_mesh(workspace)
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
    from mesh_platform.instance import local_instance
    from mesh_platform.lineage.emit import disabled, emit_run

    settings = _settings()
    if disabled():
        raise click.ClickException("lineage is disabled (MESH_LINEAGE=off or OPENLINEAGE_DISABLED=true)")
    instance = local_instance(settings)
    for run_id in run_ids:
        try:
            events = emit_run(instance, run_id, settings)
        except LookupError as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
        click.echo(f"run {run_id}: sent {', '.join(e.eventType.value for e in events)}")


@main.group()
def dbt() -> None:
    """dbt-implemented domains: prepare manifests, sync dbt contracts from ODCS contracts."""


@dbt.command("prepare")
@click.option("--force", is_flag=True, help="Parse even when the manifest is up to date.")
def dbt_prepare(force: bool) -> None:
    """Parse every dbt domain's project into target/manifest.json (done at setup, not at load)."""
    for project in _dbt_projects():
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
    for project in _dbt_projects():
        domain = project.path.name
        sql_models = sorted(p.stem for p in (project.path / "models").rglob("*.sql"))
        contracts = [load_contract(default_domains_root() / domain / "contracts" / f"{m}.yaml") for m in sql_models]
        if not sync(project.path, contracts, check=check):
            stale.append(project.path)
            click.echo(f"{'out of date' if check else 'wrote'}: {project.path / 'models' / '_mesh_contracts.yml'}")
    if check and stale:
        sys.exit(1)


def _dbt_projects(workspace: Path | None = None):
    from mesh_platform.dbt.project import DbtDomainProject
    from mesh_platform.workspace import find_workspace

    root = (Path(workspace).resolve() if workspace else find_workspace()).parent / "dbt"
    return [DbtDomainProject(p.parent) for p in sorted(root.glob("*/dbt_project.yml"))]


def _prepare_dbt(workspace: Path | None = None) -> None:
    """Parse each dbt domain's manifest when it is missing or stale (its files changed). Progress and
    problems go to stderr, so that a command's output (``--json`` included) stays its own."""
    from mesh_platform.problems import ContractError

    for project in _dbt_projects(workspace):
        if project.is_stale():
            try:
                project.prepare()
            except ContractError as exc:  # hostile YAML: reported, and that domain fails to load (stale manifest)
                for problem in exc.problems:
                    click.echo(f"error: {problem}", err=True)
                continue
            click.echo(f"prepared dbt manifest {project.manifest_path}", err=True)


def _dev_command(workspace: Path, args: tuple[str, ...]) -> list[str]:
    """`dg dev` over the project's dg workspace (dg.toml next to workspace.yaml, docs/dg.md), in this
    environment; `dagster dev -w workspace.yaml` when there is no dg.toml or dg is not installed."""
    import importlib.util

    if (workspace.parent / "dg.toml").exists() and importlib.util.find_spec("dagster_dg_cli") is not None:
        return [sys.executable, "-c", "import sys; from dagster_dg_cli.cli import main; sys.argv[0] = 'dg'; sys.exit(main())", "dev", "--use-active-venv", *args]
    return [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), *args]


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--scale", type=float, default=None, help="Regenerate the operational sources at this scale first.")
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(scale: float | None, dagster_args: tuple[str, ...]) -> None:
    """Run the mesh locally: demo sources, then `dg dev` over the domains (extra args go to it)."""
    from mesh_platform.devserver import StartupWatcher, dagster_dev_args, option
    from mesh_platform.instance import ensure_dagster_home
    from mesh_platform.workspace import find_workspace, read_workspace

    settings = _settings()
    _ensure_sources(settings, scale)
    _prepare_dbt()
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
    cmd = _dev_command(workspace, tuple(dagster_dev_args(dagster_args)))
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
            if not stop_requested:
                watcher.poll()
            # dagster dev has been seen to ignore SIGTERM: escalate after a grace period.
            if stop_requested and time.monotonic() - stop_requested[0] > 15:
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
    sys.exit(code)


from mesh_platform.cli.selfserve import grants, new, reports  # noqa: E402  (self-serve commands live in their own module)

main.add_command(new)
main.add_command(grants)
main.add_command(reports)

from mesh_platform.cli.helm import helm  # noqa: E402  (commands kept in their own modules)
from mesh_platform.cli.stack import stack  # noqa: E402
from mesh_platform.cli.contract import contract  # noqa: E402
from mesh_platform.cli.serve import serve, tokens  # noqa: E402

main.add_command(stack)
main.add_command(helm)
main.add_command(contract)
main.add_command(serve)
main.add_command(tokens)


if __name__ == "__main__":  # pragma: no cover
    main()
