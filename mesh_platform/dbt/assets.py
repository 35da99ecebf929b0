"""A dbt-implemented domain as Dagster assets that behave like every other product.

- :class:`mesh_platform.dbt.specs.DbtSpecs` maps each dbt source onto the producer's asset key
  (read from the source's ``meta.mesh`` input port) and gives each model the metadata a product
  derives from its ODCS contract (owners, description, column schema, tags, freshness, automation).
- :func:`dbt_domain_assets` builds the domain's multi-asset (dbt tests become asset checks) whose
  step (:func:`run`) does what the platform does for a Python product:

  1. **stages every input port through the governed read path** (:mod:`mesh_platform.storage.publishing`:
     grant, masking, only the declared columns, the pinned version, an audit record) as a view in
     a DuckDB file private to the run (:func:`stage_sources`) — the models read what the views
     give; what stops SQL from naming other files is the storage's own grants, as for Python code;
  2. runs ``dbt build`` in-process on the *prepared* manifest (loaded from the state ``mesh dbt
     prepare`` wrote: no parsing, no project scan at run time);
  3. records every dbt test as an asset check;
  4. publishes each model that passed as an output port — contract schema, quality rules and
     governance policies (GX results and report included), then the atomic publish of
     :mod:`mesh_platform.storage.publishing` — and fails the step, publishing nothing for it, if a
     blocking dbt test or contract rule failed.
"""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.governance import quotas
from mesh_platform.dbt.plan import DbtPlan
from mesh_platform.dbt.project import DbtDomainProject, close_duckdb
from mesh_platform.governance.access import AccessDenied
from mesh_platform.governance.audit import denied_metadata, publish_metadata, quota_metadata, read_by, read_metadata
from mesh_platform.governance.identity import domain_of_step
from mesh_platform.storage import publishing, versions
from mesh_platform.storage.lake import Lake
from mesh_platform.products.ports import ResolvedPort
from mesh_platform.foundations.settings import MeshSettings
from mesh_platform.dbt.specs import DbtSpecs
from mesh_platform.foundations.sql import quote_identifier, quote_literal


class _StagingDenied(Exception):
    """A source read was refused; carries the audit observations made so far (the denial last)."""

    def __init__(self, observations: list[dg.AssetObservation]):
        super().__init__("a source read was refused")
        self.observations = observations


def stage_sources(project: DbtDomainProject, domain: str, ports: dict[str, ResolvedPort], needed: set[str], db_path: Path, lake: Lake, pin=None) -> list[dg.AssetObservation]:
    """Stage each needed input port for the run's DuckDB, through the governed read path.

    Each source is a view in the run's DuckDB file over what the read is allowed to return: the
    granted columns of the variant the grant gives (masked or full), at the version the run pins.

    - On a lake on this machine the view scans the version's own data files in place
      (:func:`mesh_platform.storage.publishing.read_in_place`: the same decision, pin and checks of
      the version's files as a read). DuckDB scans the ports' Parquet as fast as a copy of it,
      and the copy cost 0.3-0.5 s a run at 180 days of claims (4.6M rows read and written again).
    - Otherwise (S3, or a version that needs delta-rs's reader) the read's table is written as an
      uncompressed Parquet file beside the run's DuckDB file, in the run's private folder, and the
      view reads that: without dictionaries or statistics (a file read once, whole), each in a
      thread while the next source is read.

    Returns one observation per read (the audit record of the read), for the step to log.
    """
    import duckdb
    import pyarrow.parquet as pq

    def write(table, path: Path) -> None:
        pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)

    observations = []
    views = []  # (file written in a thread or None, schema, table, SELECT of the view)
    staged = db_path.parent / "staged"
    staged.mkdir(exist_ok=True)
    con = duckdb.connect(str(db_path))
    writes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mesh-dbt-stage")
    try:
        for number, unique_id in enumerate(sorted(needed)):
            source = project.manifest["sources"][unique_id]
            port = ports[unique_id]
            versions = pin(port.key) if pin else None
            try:
                in_place = publishing.read_in_place(lake, domain, port.contract, port.columns, versions)
                read = in_place or publishing.read(lake, domain, port.contract, port.columns, versions)
            except AccessDenied as exc:
                # the refusal is audited like a read, then fails the step
                observations.append(dg.AssetObservation(asset_key=port.key, metadata=denied_metadata(domain, port.contract.id, exc.reason, port.columns)))
                raise _StagingDenied(observations) from exc
            schema, table = quote_identifier(source["schema"]), quote_identifier(source["identifier"] or source["name"])
            if in_place is not None:
                files = ", ".join(quote_literal(f) for f in in_place.files)
                select = f"SELECT {', '.join(quote_identifier(c) for c in in_place.columns)} FROM read_parquet([{files}], union_by_name = true)"
                views.append((None, schema, table, select))
                rows = in_place.rows
            else:
                path = staged / f"{number}.parquet"  # no name from the manifest in a path
                views.append((writes.submit(write, read.table, path), schema, table, f"SELECT * FROM read_parquet({quote_literal(str(path))})"))
                rows = read.table.num_rows
            observations.append(
                dg.AssetObservation(
                    asset_key=port.key,
                    metadata=read_metadata(domain, port.contract.id, read.port, read.columns, read.decision.masked, read.decision.removed, rows, "dbt source", read.version,
                                           read_for=f"dbt source {port.contract.id}"),
                )
            )
        for written, schema, table, select in views:  # a view reads its file's schema: once it is written
            if written is not None:
                written.result()  # a file that could not be written fails the step here
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            con.execute(f"CREATE OR REPLACE VIEW {schema}.{table} AS {select}")
    finally:
        writes.shutdown(wait=True)
        con.close()
    return observations


def _read_built(result, models: dict[str, dict], db_path: Path) -> dict:
    """The tables of the models dbt built (by unique id), read while dbt's database is still open:
    a connection to the same file is then the same database, not a reopening of the file."""
    import duckdb

    if result.result is None:
        raise RuntimeError(f"dbt build did not run: {result.exception}")
    built = [res.node.unique_id for res in result.result.results
             if res.node.unique_id in models and str(getattr(res.status, "value", res.status)) == "success"]
    frames = {}
    if built:
        con = duckdb.connect(str(db_path))
        try:
            for uid in built:
                node = models[uid]
                frames[uid] = con.execute(f"SELECT * FROM {quote_identifier(node['schema'])}.{quote_identifier(node['alias'] or node['name'])}").df()
        finally:
            con.close()
    return frames


@dataclass
class _Published:
    """What publishing one model gave: the output's metadata, or why it was not published
    (``failure``), and events for the step to log (a quota refusal's audit record)."""

    metadata: dict
    failure: str | None = None
    events: list = field(default_factory=list)


def _publish_model(context, specs: DbtSpecs, lake: Lake, reports: bool, home: str | None, name: str, frame) -> _Published:
    """Audit one built model against its contract (schema, quality rules, policies), check the
    domain's quotas, and publish it as an output port: what a Python product's step and IO manager
    do. Runs in a thread of the step: it logs nothing itself, the step yields what it returns."""
    from mesh_platform.quality.checks import audit

    domain, contract = specs.domain, specs.contracts[name]
    events: list = []
    try:
        auditing = audit(context, contract, frame, emit_checks=False, policies=specs.plan.policies[name], lake=lake, reports=reports)
        while True:  # with emit_checks=False it yields nothing; anything it would yield goes to the step
            events.append(next(auditing))
    except StopIteration as done:
        audited, quality_meta = done.value
    except Exception as exc:  # contract schema, quality rule or policy: report, publish nothing
        return _Published({}, str(exc), events)
    if specs.plan.quotas is not None:  # the domain's quotas, as for a Python product
        try:
            quota_use = quotas.check_publish(specs.plan.quotas, name, audited.table.num_rows, audited.table.nbytes, lake)
        except quotas.QuotaExceeded as exc:
            events.append(dg.AssetObservation(asset_key=dg.AssetKey([domain, name]), metadata=quota_metadata(domain, f"{domain}/{name}", exc.quota, exc.limit, exc.would_use, str(exc))))
            return _Published({}, str(exc), events)
        quality_meta[md.QUOTAS] = dg.MetadataValue.json({"limits": specs.plan.quotas.as_metadata(), "use": quota_use})
    written = publishing.publish(lake, contract, audited.table, home=home)
    full = written[0][1]
    return _Published({
        **read_by(context.instance, dg.AssetKey([domain, name])),
        "dagster/uri": full.uri,
        "dagster/row_count": full.rows,
        md.BYTES: sum(p.bytes for _, p in written),
        md.CONTRACT_VERSION: contract.version,
        **publishing.delta_metadata(written),
        **quality_meta,
        **publish_metadata(contract.id, f"v{contract.major}", [v for v, _ in written], audited.table.column_names),
    }, None, events)


def _column_lineage(plan: DbtPlan, name: str, log) -> dg.TableColumnLineage | None:
    """The model's ``dagster/column_lineage`` (docs/lineage.md); a model whose SQL cannot be
    analysed publishes without one, and the run's log says why."""
    from mesh_platform.dbt.sql_lineage import SqlNotAnalysable

    try:
        return plan.column_lineage(name)
    except SqlNotAnalysable as exc:
        log.warning(f"no column lineage for {name}: {exc}")
        return None


def run(context: dg.AssetExecutionContext, project: DbtDomainProject, specs: DbtSpecs, lake: Lake, reports: bool = True,
        home: str | None = None):
    """The step of a dbt domain: stage governed sources, dbt build, checks, publish (``home``: the
    mesh home whose local masking key pseudonymizes a masked variant)."""
    # the domain this step runs as, bound by the platform (the specs' domain must agree)
    domain = domain_of_step(context.get_step_execution_context(), specs.domain)
    models = {uid: node for uid, node in specs.models.items() if dg.AssetKey([domain, node["name"]]) in context.selected_asset_keys}
    needed = {dep for node in models.values() for dep in node["depends_on"]["nodes"] if dep.startswith("source.")}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"mesh-dbt-{domain}-") as tmp:
        # dbt-duckdb names the database after the file, and the prepared manifest addresses models
        # as <database>.<schema>.<name>: the run's file must carry the database name of the parse.
        database = next((n["database"] for n in models.values() if n.get("database")), domain)
        db_path = Path(tmp) / f"{database}.duckdb"
        try:
            step = context.get_step_execution_context()
            pins = versions.pinned_all(step.instance, sorted({specs.ports[uid].key for uid in needed}, key=str), step.dagster_run.tags)
            staged = stage_sources(project, domain, specs.ports, needed, db_path, lake, pins.get)
        except _StagingDenied as denied:
            for observation in denied.observations:
                context.log_event(observation)
            raise denied.__cause__ from None
        for observation in staged:
            context.log_event(observation)
        # dbt runs on the manifest `mesh dbt prepare` wrote: no parsing, no project scan per run;
        # the run's own folder keeps concurrent runs apart
        result = project.build(db_path, Path(tmp), [node["name"] for node in models.values()], keep_open=True)
        try:
            frames = _read_built(result, models, db_path)
        finally:
            close_duckdb()
        status: dict[str, str] = {}
        messages: dict[str, str] = {}
        blocked: set[str] = set()
        checks: list[dg.AssetCheckResult] = []
        selected_checks = set(context.selected_asset_check_keys)
        for res in result.result.results:
            uid = res.node.unique_id
            status[uid] = str(getattr(res.status, "value", res.status))
            messages[uid] = " ".join((res.message or "").split())
            if uid.startswith("test."):
                check = specs.checks_by_test.get(uid)
                if check is None:
                    continue
                severity = specs.severity(uid)
                passed = status[uid] == "pass"
                if not passed and severity == "ERROR":
                    blocked.add(check.asset_key.path[-1])
                if check not in selected_checks:  # dbt ran it (it touches a selected model); Dagster did not ask for it
                    continue
                checks.append(dg.AssetCheckResult(
                    asset_key=check.asset_key,
                    check_name=check.name,
                    passed=passed,
                    severity=dg.AssetCheckSeverity.WARN if severity == "WARN" else dg.AssetCheckSeverity.ERROR,
                    metadata={"dbt_status": status[uid], "failures": res.failures or 0, "message": res.message or ""},
                ))
        publishable = {}
        for uid, node in models.items():
            name = node["name"]
            if status.get(uid) != "success":
                # dbt's own words: a null in a required column is DuckDB refusing the contract's constraint
                failures.append(f"{name}: dbt {status.get(uid, 'skipped')}" + (f": {messages[uid]}" if messages.get(uid) else ""))
            elif name in blocked:
                failures.append(f"{name}: a blocking dbt test failed; not published")
            else:
                publishable[uid] = name
        # The models that passed are audited and published one after the other (quotas count each
        # publish before the next), in a thread, while this one records the dbt tests' results:
        # storing Dagster's events and writing the ports overlap (0.1-0.2 s of a run at four marts).
        # Once a publish raised, or this step stops, no further model is published: a port is
        # never published without its materialization being recorded.
        stop = threading.Event()

        def publish_next(name: str, frame) -> _Published | None:
            if stop.is_set():
                return None
            try:
                return _publish_model(context, specs, lake, reports, home, name, frame)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-dbt-publish") as publisher:
            try:
                published = {uid: publisher.submit(publish_next, name, frames[uid]) for uid, name in publishable.items()}
                yield from checks
                for uid, name in publishable.items():
                    outcome = published[uid].result()
                    yield from outcome.events
                    if outcome.failure is not None:
                        failures.append(f"{name}: {outcome.failure}")
                        continue
                    key = dg.AssetKey([domain, name])
                    lineage = _column_lineage(specs.plan, name, context.log)
                    yield dg.Output(
                        None,
                        output_name=context.assets_def.get_output_name_for_asset_key(key),
                        metadata={**({"dagster/column_lineage": lineage} if lineage is not None else {}), **outcome.metadata},
                    )
            except BaseException:  # a publish failed, or the step stops: the models not started stay unpublished
                stop.set()
                raise
    if failures:
        raise dg.Failure("dbt domain " + domain + " did not publish:\n" + "\n".join(f"  - {f}" for f in failures))


def dbt_domain_assets(domain: str, plan: DbtPlan, settings: MeshSettings) -> dg.AssetsDefinition:
    """A dbt domain's models as one multi-asset (its checks the dbt tests), whose step is :func:`run`."""
    specs = DbtSpecs(domain, plan)
    project = plan.project

    @dg.multi_asset(name=f"{domain}_dbt", specs=specs.asset_specs(), check_specs=specs.check_specs(), can_subset=True,
                    op_tags={"kind": "dbt"})
    def _assets(context):
        from mesh_platform.products.build import step_home, step_lake

        yield from run(context, project, specs, step_lake(context, settings), settings.quality_reports, step_home(context, settings))

    return _assets
