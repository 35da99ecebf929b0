"""A Dagster run as OpenLineage run events, read back from the instance's event log.

One Dagster run is one OpenLineage run (same run id). Its **job** is ``<domain>.<job name>`` in
the namespace ``MESH_LINEAGE_NAMESPACE`` (default ``mesh``); Dagster's implicit asset job, which
runs `mesh materialize` and the UI's "Materialize" button, is called ``<domain>.assets``.

Events: ``START`` at the run's start, then ``COMPLETE`` (success), ``FAIL`` (failure, with the
first step error) or ``ABORT`` (canceled). Each names

- **outputs**: the assets the run materialized (in START: the assets it planned to), and
- **inputs**: what the run read: other domains' output ports (from the read audit, so a run that
  failed after reading still shows its inputs) and its own domain's assets from earlier runs (from
  the data-version provenance Dagster records on each materialization).

A dataset is named after where it lives: the output port's folder ``<lake>/<domain>/<product>/v<major>``
(a private intermediate: ``<lake>/<domain>/_private/<asset>``), in the namespace ``file`` for a
local lake or ``s3://<bucket>`` for S3, following OpenLineage's naming conventions; its ``symlinks``
facet gives the product's mesh name (``claims.claims``). Its facets:

- ``schema`` — the contract's columns (name, logical type, description, position);
- ``ownership`` — the contract's owners;
- ``documentation`` — the contract's purpose;
- ``version`` — the table version written or read: Dagster's data version of the materialization
  until ports are table formats with versions of their own (see ``tableVersion`` below);
- ``dataQualityAssertions`` — on an output, every asset check the run evaluated on it (schema,
  policies, quarantine, each contract quality rule): name, kind, column, pass/fail, severity,
  expected and observed values;
- ``mesh`` (custom) — contract id and version, major, access level, classification, code version,
  data version, ``tableVersion`` (``None`` until ports have table versions), URI, row count;
- on an input, ``mesh`` (custom input facet) — the port variant read, the columns read, the
  columns masked or removed for this consumer, rows; on an output, ``outputStatistics`` (rows, bytes).

Run facets: ``processing_engine`` (Dagster and its version), ``errorMessage`` on FAIL, ``test``
(every check of the run) and ``mesh`` (domain, Dagster run id, who launched it). Job facets:
``jobType`` (BATCH, integration DAGSTER) and ``ownership`` (the domain's owners).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import attr
import dagster as dg
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    RunFacet,
    set_producer,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    dataset_version_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    ownership_dataset,
    ownership_job,
    processing_engine_run,
    schema_dataset,
    symlinks_dataset,
    test_run,
)

from mesh_platform.foundations import metadata as mk
from mesh_platform.contracts.model import Contract
from mesh_platform.storage.lake import Lake


def _project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dagster-data-mesh")
    except PackageNotFoundError:
        return "dev"


#: who produced the events and facets (a URI, as the spec asks; the project has no public URL of its own)
PRODUCER = f"urn:dagster-data-mesh:mesh_platform:{_project_version()}"
#: the platform's own facets are described in docs/lineage.md; their schema URIs name them and their version
FACET_SCHEMA = "urn:dagster-data-mesh:facet"
IMPLICIT_JOBS = ("__ASSET_JOB", "__ephemeral_asset_job__")
INPUT_VERSION_TAG = "dagster/input_data_version/"
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
PORT_RE = re.compile(r"^v(?P<major>[0-9]+)(?:/(?P<variant>.+))?$")
PREVIOUS_MAJOR_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)_v(?P<major>[0-9]+)$")
set_producer(PRODUCER)  # the facets' `_producer`: this platform, not the client library


def namespace() -> str:
    return os.environ.get("MESH_LINEAGE_NAMESPACE") or "mesh"


# -- custom facets (the platform's own fields, next to the standard ones) ----------------------


@attr.define
class MeshDatasetFacet(DatasetFacet):
    """What the mesh knows about a dataset: its product, contract and versions."""

    domain: str
    assetKey: str  # noqa: N815
    product: str | None = attr.field(default=None)
    contractVersion: str | None = attr.field(default=None)  # noqa: N815
    major: int | None = attr.field(default=None)
    accessLevel: str | None = attr.field(default=None)  # noqa: N815
    classification: str | None = attr.field(default=None)
    private: bool = attr.field(default=False)
    uri: str | None = attr.field(default=None)
    dataVersion: str | None = attr.field(default=None)  # noqa: N815
    codeVersion: str | None = attr.field(default=None)  # noqa: N815
    tableVersion: str | None = attr.field(default=None)  # noqa: N815  (ports as versioned tables: not yet)
    materializationRunId: str | None = attr.field(default=None)  # noqa: N815
    rowCount: int | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return f"{FACET_SCHEMA}:MeshDatasetFacet:1-0-0"


@attr.define
class MeshInputDatasetFacet(InputDatasetFacet):
    """How a consumer read an input port: variant, columns, masking."""

    consumer: str
    port: str | None = attr.field(default=None)
    columns: list[str] = attr.field(factory=list)
    masked: list[str] = attr.field(factory=list)
    removed: list[str] = attr.field(factory=list)
    rows: int | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACET_SCHEMA}:MeshInputDatasetFacet:1-0-0"


@attr.define
class MeshRunFacet(RunFacet):
    """The Dagster run behind the OpenLineage run."""

    domain: str
    dagsterRunId: str  # noqa: N815
    dagsterJob: str  # noqa: N815
    launchedBy: str | None = attr.field(default=None)  # noqa: N815
    status: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACET_SCHEMA}:MeshRunFacet:1-0-0"


# -- reading a run back from the event log -------------------------------------------------------


@dataclass
class Written:
    key: dg.AssetKey
    metadata: dict[str, Any]
    tags: dict[str, str]


@dataclass
class Read:
    key: dg.AssetKey
    contract_id: str | None = None
    port: str | None = None
    consumer: str | None = None
    columns: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rows: int | None = None
    data_version: str | None = None


@dataclass
class RunRecord:
    """The facts of one Dagster run the events are built from."""

    run: Any
    domain: str
    start: float | None = None
    end: float | None = None
    planned: list[dg.AssetKey] = field(default_factory=list)
    written: dict[dg.AssetKey, Written] = field(default_factory=dict)
    reads: dict[dg.AssetKey, Read] = field(default_factory=dict)
    checks: list[Any] = field(default_factory=list)
    error: tuple[str, str | None] | None = None


def _value(metadata: dict, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


def run_domain(run, keys=()) -> str:
    """The domain a run belongs to: its tag, else its code location, else its assets' domain."""
    if run.tags.get(mk.DOMAIN):
        return run.tags[mk.DOMAIN]
    origin = getattr(run, "remote_job_origin", None)
    if origin is not None:
        return origin.location_name
    keys = sorted([*(run.asset_selection or []), *keys], key=str)
    return keys[0].path[0] if keys else "unknown"


def job_name(run, domain: str | None = None) -> str:
    """``<domain>.<job>``; Dagster's implicit asset jobs are the domain's ``assets`` job."""
    implicit = run.job_name in IMPLICIT_JOBS
    return f"{domain or run_domain(run)}.{'assets' if implicit else run.job_name}"


def read_run(instance: dg.DagsterInstance, run_id: str) -> RunRecord:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r} in the Dagster instance")
    record = RunRecord(run, run_domain(run))
    T = dg.DagsterEventType
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == T.RUN_START:
            record.start = entry.timestamp
        elif kind in (T.RUN_SUCCESS, T.RUN_FAILURE, T.RUN_CANCELED):
            record.end = entry.timestamp
            if kind == T.RUN_FAILURE and record.error is None:
                error = getattr(event.event_specific_data, "error", None)
                record.error = (error.message.strip(), "".join(error.stack)) if error else (event.message or "run failed", None)
        elif kind == T.STEP_FAILURE:
            error = event.step_failure_data.error if event.step_failure_data else None
            while error is not None and error.cause is not None:  # Dagster's wrapper -> the domain's own exception
                error = error.cause
            if error is not None and (record.error is None or record.error[1] is None):
                record.error = (f"{event.step_key}: {error.message.strip()}", "".join(error.stack))
        elif kind == T.ASSET_MATERIALIZATION_PLANNED:
            key = event.event_specific_data.asset_key
            if key not in record.planned:
                record.planned.append(key)
        elif kind == T.ASSET_MATERIALIZATION:
            m = entry.asset_materialization
            record.written[m.asset_key] = Written(m.asset_key, dict(m.metadata), dict(m.tags or {}))
        elif kind == T.ASSET_OBSERVATION:
            o = entry.asset_observation
            if _value(o.metadata, mk.AUDIT) == "read":
                md = o.metadata
                record.reads[o.asset_key] = Read(
                    o.asset_key, _value(md, mk.PRODUCT), _value(md, mk.PORT), _value(md, mk.CONSUMER),
                    list(_value(md, mk.COLUMNS_READ) or _value(md, mk.LEGACY_COLUMNS_READ, []) or []), list(_value(md, mk.MASKED, []) or []),
                    list(_value(md, mk.REMOVED, []) or []), _value(md, mk.ROWS),
                )
        elif kind == T.ASSET_CHECK_EVALUATION:
            record.checks.append(event.event_specific_data)
    # same-domain inputs and the versions of every input, from the provenance of what was written
    for written in record.written.values():
        for tag, version in written.tags.items():
            if not tag.startswith(INPUT_VERSION_TAG):
                continue
            key = dg.AssetKey.from_user_string(tag[len(INPUT_VERSION_TAG):])
            if key in record.written:
                continue  # produced by this very run: not an input of it
            read = record.reads.setdefault(key, Read(key))
            read.data_version = read.data_version or version
    if record.domain == "unknown":
        record.domain = run_domain(run, [*record.planned, *record.written])
    for read in record.reads.values():
        if read.data_version is None:
            read.data_version = _version_before(instance, read.key, record.end or record.start)
    return record


def _version_before(instance: dg.DagsterInstance, key: dg.AssetKey, when: float | None) -> str | None:
    """The data version of ``key``'s last materialization before ``when`` (what a failed run read)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, before_timestamp=when), limit=1).records
    if not records:
        return None
    m = records[0].event_log_entry.asset_materialization
    return (m.tags or {}).get(DATA_VERSION_TAG) if m else None


# -- building the events ----------------------------------------------------------------------------


def _iso(timestamp: float | None) -> str:
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc) if timestamp else datetime.now(timezone.utc)
    return when.isoformat(timespec="milliseconds")


def _contract(key: dg.AssetKey, contract_id: str | None, port: str | None, registry) -> Contract | None:
    """The contract a dataset was written or read under (``None``: a private intermediate)."""
    major = None
    match = PORT_RE.match(port or "")
    if match:
        major = int(match.group("major"))
    candidates = [(contract_id, major), (key.to_user_string() if len(key.path) == 2 else None, major)]
    previous = PREVIOUS_MAJOR_RE.match(key.path[-1])
    if previous and len(key.path) == 2 and major is None:  # `<product>_v<major>`: a kept previous major's port
        candidates.append((f"{key.path[0]}/{previous.group('name')}", int(previous.group("major"))))
    for ref, pinned in candidates:
        if ref is None:
            continue
        try:
            return registry.get(ref, major=pinned)
        except LookupError:
            continue
    return None


def _location(lake: Lake, key: dg.AssetKey, contract: Contract | None) -> tuple[str, str, str]:
    """(namespace, name, URI) of a dataset: where it lives in the lake, per OpenLineage's naming."""
    if contract is not None:
        relpath = f"{contract.domain}/{contract.name}/v{contract.major}"  # the port: its major's folder
    else:
        relpath = os.path.dirname(Lake.private_path(key.path[0], key.path[-1]))
    uri = lake.uri(relpath)
    if uri.startswith("file://"):
        return "file", uri[len("file://"):], uri
    scheme, _, rest = uri.partition("://")
    bucket, _, path = rest.partition("/")
    return f"{scheme}://{bucket}", path, uri


def dataset_name(lake: Lake, key: dg.AssetKey, contract: Contract | None) -> tuple[str, str]:
    """(namespace, name) of a dataset."""
    return _location(lake, key, contract)[:2]


def _dataset_facets(lake: Lake, key: dg.AssetKey, contract: Contract | None, data_version: str | None,
                    code_version: str | None, run_id: str | None, rows: int | None) -> dict[str, Any]:
    from mesh_platform.products.specs import most_sensitive

    mesh = MeshDatasetFacet(
        domain=key.path[0], assetKey=key.to_user_string(), private=contract is None, uri=_location(lake, key, contract)[2],
        dataVersion=data_version, codeVersion=code_version, tableVersion=None, materializationRunId=run_id, rowCount=rows,
    )
    facets: dict[str, Any] = {"mesh": mesh}
    if data_version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=data_version)
    if contract is None:
        return facets
    mesh.product = contract.id
    mesh.contractVersion = contract.version
    mesh.major = contract.major
    access = contract.custom("accessLevel")
    mesh.accessLevel = str(access) if access is not None else None
    mesh.classification = most_sensitive(contract.classifications)
    facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
        schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.logical_type, description=c.description, ordinal_position=i)
        for i, c in enumerate(contract.columns, start=1)
    ])
    facets["ownership"] = ownership_dataset.OwnershipDatasetFacet(owners=[ownership_dataset.Owner(name=o) for o in contract.owners])
    if contract.purpose:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(description=contract.purpose)
    facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(identifiers=[symlinks_dataset.Identifier(namespace=namespace(), name=contract.id, type="DATA_PRODUCT")])
    return facets


def _assertions(key: dg.AssetKey, checks: list, contract: Contract | None) -> tuple[list, list]:
    """The run's asset checks on one output: dataset assertions, and run-level test executions."""
    from mesh_platform.quality.rules import REQUIRED_CHECK, rules_for

    rules = {r.name: r for r in rules_for(contract)} if contract is not None else {}
    columns = {r.column: r for r in rules.values() if r.check_name == REQUIRED_CHECK}
    assertions, tests = [], []
    for check in checks:
        rule = rules.get(check.check_name)
        severity = "error" if check.severity == dg.AssetCheckSeverity.ERROR else "warn"
        nulls = _value(check.metadata, "columns") if check.check_name == REQUIRED_CHECK else None
        if isinstance(nulls, dict):  # one Dagster check for the required columns: one assertion per column here
            assertions.extend(data_quality_assertions_dataset.Assertion(
                assertion="not_null", success=not count, column=column, severity=severity,
                name=columns[column].name if column in columns else f"{column}_not_null",
                description=columns[column].description if column in columns else None,
                expected="0", actual=str(count),
            ) for column, count in nulls.items())
        else:
            observed = _value(check.metadata, "observed_value")
            assertions.append(data_quality_assertions_dataset.Assertion(
                assertion=rule.kind if rule else check.check_name,
                success=bool(check.passed),
                column=rule.column if rule else None,
                severity=severity,
                name=check.check_name,
                description=rule.description if rule else (check.description or None),
                expected=rule.expected if rule else None,
                actual=None if observed is None else str(observed),
            ))
        tests.append(test_run.TestExecution(
            name=f"{key.to_user_string()}:{check.check_name}", status="pass" if check.passed else "fail",
            severity=severity, type=rule.kind if rule else check.check_name,
            description=rule.description if rule else None,
        ))
    return assertions, tests


def _column_lineage(lake: Lake, lineage: dg.TableColumnLineage, contract: Contract | None, registry) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """OpenLineage's ``columnLineage`` facet from a publish's ``dagster/column_lineage`` (declared in its contract)."""
    logic = {c.name: c.transform_logic for c in contract.columns} if contract is not None else {}
    fields = {}
    for column, deps in lineage.deps_by_column.items():
        inputs = []
        for dep in deps:
            ns, name = dataset_name(lake, dep.asset_key, _contract(dep.asset_key, None, None, registry))
            inputs.append(column_lineage_dataset.InputField(namespace=ns, name=name, field=dep.column_name))
        fields[column] = column_lineage_dataset.Fields(inputFields=inputs, transformationDescription=logic.get(column))
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields)


def run_events(instance: dg.DagsterInstance, run_id: str, registry=None, *, lake: Lake) -> list[RunEvent]:
    """The OpenLineage events of a Dagster run: START, and COMPLETE, FAIL or ABORT once it ended.
    ``lake``: the lake of the run's mesh (it names the datasets)."""
    from mesh_platform.contracts.registry import mesh_registry

    registry = registry if registry is not None else mesh_registry()
    record = read_run(instance, run_id)
    run = record.run

    planned: list[OutputDataset] = []  # START: what the run set out to write, as its contracts describe it
    outputs: list[OutputDataset] = []  # COMPLETE / FAIL: what it wrote, with versions and check results
    tests: list = []
    checked: dict[dg.AssetKey, list] = {}
    for check in record.checks:
        checked.setdefault(check.asset_key, []).append(check)
    for key in record.planned or sorted(set(record.written) | set(checked), key=str):
        written = record.written.get(key)
        contract = _contract(key, _value(written.metadata, mk.PRODUCT) if written else None,
                             _value(written.metadata, mk.PORT) if written else None, registry)
        ns, name = dataset_name(lake, key, contract)
        planned.append(OutputDataset(ns, name, facets=_dataset_facets(lake, key, contract, None, None, None, None)))
        if written is None and key not in checked:
            continue  # not reached: the run stopped before
        if written is not None:
            rows = _value(written.metadata, "dagster/row_count")
            facets = _dataset_facets(lake, key, contract, written.tags.get(DATA_VERSION_TAG), written.tags.get(CODE_VERSION_TAG), run.run_id, rows)
            stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows, size=_value(written.metadata, mk.BYTES))
            output_facets = {"outputStatistics": stats}
        else:  # audited and refused: nothing written, but the failed assertions belong to this dataset
            facets = _dataset_facets(lake, key, contract, None, None, None, None)
            output_facets = {}
        declared = _value(written.metadata, "dagster/column_lineage") if written is not None else None
        if declared is not None:
            facets["columnLineage"] = _column_lineage(lake, declared, contract, registry)
        assertions, run_tests = _assertions(key, checked.get(key, []), contract)
        tests.extend(run_tests)
        if assertions:
            facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions)
        outputs.append(OutputDataset(ns, name, facets=facets, outputFacets=output_facets))

    inputs: list[InputDataset] = []
    for key, read in sorted(record.reads.items(), key=lambda kv: str(kv[0])):
        contract = _contract(key, read.contract_id, read.port, registry)
        producer_run = None
        if read.data_version is not None:
            producer_run = _producer_run(instance, key, read.data_version)
        ns, name = dataset_name(lake, key, contract)
        facets = _dataset_facets(lake, key, contract, read.data_version, None, producer_run, None)
        input_facets = {"mesh": MeshInputDatasetFacet(
            consumer=read.consumer or record.domain, port=read.port, columns=read.columns, masked=read.masked, removed=read.removed, rows=read.rows,
        )}
        inputs.append(InputDataset(ns, name, facets=facets, inputFacets=input_facets))

    job = Job(namespace=namespace(), name=job_name(run, record.domain), facets={
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DAGSTER", jobType="JOB"),
        "ownership": ownership_job.OwnershipJobFacet(owners=[ownership_job.Owner(name=o) for o in _domain_owners(record.domain)]),
    })

    def run_facets(state: str | None) -> dict[str, Any]:
        facets: dict[str, Any] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(version=dg.__version__, name="Dagster", openlineageAdapterVersion=_client_version()),
            "mesh": MeshRunFacet(domain=record.domain, dagsterRunId=run.run_id, dagsterJob=run.job_name, launchedBy=run.tags.get(mk.LAUNCHED_BY) or _launcher(run), status=state),
        }
        return facets

    events = [RunEvent(eventType=RunState.START, eventTime=_iso(record.start or getattr(run, "start_time", None)), run=Run(runId=run.run_id, facets=run_facets("STARTED")),
                       job=job, inputs=inputs, outputs=planned, producer=PRODUCER)]
    status = run.status
    if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        state = {dg.DagsterRunStatus.SUCCESS: RunState.COMPLETE, dg.DagsterRunStatus.FAILURE: RunState.FAIL}.get(status, RunState.ABORT)
        facets = run_facets(status.value)
        if tests:
            facets["test"] = test_run.TestRunFacet(tests=tests)
        if state == RunState.FAIL:
            message, stack = record.error or ("run failed", None)
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=message, programmingLanguage="python", stackTrace=stack)
        events.append(RunEvent(eventType=state, eventTime=_iso(record.end), run=Run(runId=run.run_id, facets=facets), job=job,
                               inputs=inputs, outputs=outputs, producer=PRODUCER))
    return events


def _producer_run(instance: dg.DagsterInstance, key: dg.AssetKey, data_version: str) -> str | None:
    """The run that wrote the version of ``key`` that was read (searched among its latest materializations)."""
    for rec in instance.fetch_materializations(key, limit=20).records:
        m = rec.event_log_entry.asset_materialization
        if m is not None and (m.tags or {}).get(DATA_VERSION_TAG) == data_version:
            return rec.run_id
    return None


def _domain_owners(domain: str) -> list[str]:
    from mesh_platform.contracts.loader import ContractError
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.products.descriptor import load_descriptor

    try:
        return list(load_descriptor(default_domains_root() / domain / "domain.yaml").owners)
    except (ContractError, RuntimeError, OSError):
        return []


def _launcher(run) -> str:
    if run.tags.get("dagster/sensor_name"):
        return f"sensor:{run.tags['dagster/sensor_name']}"
    if run.tags.get("dagster/schedule_name"):
        return f"schedule:{run.tags['dagster/schedule_name']}"
    if run.tags.get("dagster/backfill"):
        return "backfill"
    return "dagster"


def _client_version() -> str:
    from importlib.metadata import version

    return version("openlineage-python")
