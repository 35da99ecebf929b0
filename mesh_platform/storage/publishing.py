"""The one write path and the one read path of output ports; every reader goes through here.

- :func:`publish` writes the audited table as the port's ``full`` variant and, when the contract
  has sensitive columns, the ``masked`` variant that uncleared consumers read
  (``<lake>/<domain>/<product>/v<major>_masked/``): storage holds nothing a consumer may not see, so
  storage permissions can mirror the grants (``mesh iam``). Each variant is a Delta table
  (:mod:`mesh_platform.storage.delta`) and a publish is one commit to each; both versions are returned
  (and recorded on the materialization) so a reader of the masked variant reads the masked version
  of the same publish. When the masked commit fails, the full table is restored to the version the
  publish started from, so the lake never holds one variant of a publish without the other.
- :func:`read` authorizes the consumer (:func:`mesh_platform.governance.access.authorize`), picks
  the variant, reads only the requested columns, and returns what the audit log needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import dagster as dg
import pyarrow as pa

from mesh_platform.products import partitions
from mesh_platform.contracts.model import Contract
from mesh_platform.governance.access import AccessDecision, AccessDenied, authorize
from mesh_platform.governance.masking import mask_table, sensitive_columns
from mesh_platform.governance.privacy import Aggregate, PrivacyLedger, Release, compute, request_release
from mesh_platform.storage import delta
from mesh_platform.storage.lake import Lake, Published
from mesh_platform.products.ports import port_asset_key


@dataclass(frozen=True)
class PortRead:
    table: pa.Table
    decision: AccessDecision
    port: str
    columns: list[str]
    version: int | None = None  # the Delta version read
    variant: str = "full"


_PREVIOUS_MAJOR = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)_v(?P<major>[0-9]+)$")


def port_contract(registry, consumer: str, producer: str, name: str, contract_id: str | None = None, major: int | None = None) -> Contract | None:
    """The contract whose output port the asset ``producer/name`` is, or None for anything else.

    What the reader's metadata says (``contract_id``, ``major``) is checked against the asset it
    reads: metadata naming one product cannot open another asset, so a private intermediate stays
    private whatever a consumer declares. ``<product>_v<N>`` is the port of a kept previous major.
    """
    if contract_id:
        current = registry.get(contract_id)
        contract = registry.get(contract_id, major=major) if major is not None else current
        if port_asset_key(contract, current.major) != dg.AssetKey([producer, name]):
            raise AccessDenied(consumer, f"{producer}/{name}", f"the read names the port of {contract.id!r} v{contract.major}, which is not this asset")
        return contract
    try:
        current = registry.get(f"{producer}/{name}")
    except LookupError:
        previous = _PREVIOUS_MAJOR.match(name)
        if previous is None:
            return None
        try:
            return registry.get(f"{producer}/{previous.group('name')}", major=int(previous.group("major")))
        except LookupError:
            return None
    return registry.get(current.id, major=major) if major not in (None, current.major) else current


CONTRACT_SNAPSHOT = "mesh.contract"


def contract_snapshot(contract: Contract) -> str:
    """The contract as published with a commit (JSON of its ODCS document)."""
    import json

    return json.dumps(contract.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


def last_published_contract(lake: Lake, domain: str, name: str, major: int | None = None) -> tuple[Contract, int, str] | None:
    """(contract, version, variant) of the latest commit of ``domain/name`` that carries its contract:
    the major asked for, else the highest published; None when nothing readable was published."""
    import json

    from mesh_platform.contracts import parse_contract
    from mesh_platform.foundations.problems import ContractError

    if major is not None:
        majors = [major]
    else:
        try:
            majors = sorted((int(n[1:]) for n in lake.list(f"{domain}/{name}") if re.fullmatch(r"v[0-9]+", n)), reverse=True)
        except OSError:  # storage may refuse listing above the granted tables
            majors = []
    for m in majors:
        for variant in ("full", "masked"):  # a consumer's keys may reach only the masked variant
            try:
                commits = delta.history(lake, Lake.port_path(domain, name, m, variant=variant), f"{domain}.{name}")
            except Exception:  # noqa: BLE001 - not there, damaged or not readable with these keys: the next one
                continue
            for commit in commits:
                snapshot = commit.get(CONTRACT_SNAPSHOT)
                if not snapshot:
                    continue
                try:
                    contract = parse_contract(json.loads(snapshot), f"{lake.uri(Lake.port_path(domain, name, m, variant=variant))} version {commit.get('version')}")
                except (ContractError, ValueError):
                    continue
                return contract, int(commit.get("version", -1)), variant
    return None


class LastPublished:
    """The registry as a consumer's definitions see it: the mesh's contracts, and where a producer's
    contract file cannot be read, the contract it last published (from the lake), said so.

    A damaged file in one domain fails that domain's load (naming file and field); its consumers go
    on against what it last published, and each use is recorded in :attr:`used` for the load to
    report. Nothing published (or nothing readable): the original error, with that reason added.
    """

    def __init__(self, registry, lake: Lake):
        self._registry = registry
        self._lake = lake
        self.used: dict[str, str] = {}  # contract id -> what was used instead, and why

    def get(self, ref: str, major: int | None = None, today=None) -> Contract:
        from mesh_platform.contracts.registry import ContractUnreadable

        try:
            return self._registry.get(ref, major, today)
        except ContractUnreadable as exc:
            found = last_published_contract(self._lake, exc.domain, exc.name, major)
            if found is None:
                raise ContractUnreadable(exc.domain, exc.name, exc.file, "and nothing of it is published to load against instead") from None
            contract, version, variant = found
            self.used[contract.id] = (f"{exc.file} cannot be read: loaded against the contract {contract.domain} last published "
                                      f"({contract.id} {contract.version}, {variant} table version {version})")
            return contract

    def previous_majors(self, contract_id: str, *args, **kwargs) -> list[Contract]:
        from mesh_platform.contracts.registry import ContractUnreadable

        try:
            return self._registry.previous_majors(contract_id, *args, **kwargs)
        except ContractUnreadable:
            return []

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def __iter__(self):
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


def own_contract(contract: Contract, domain: str, name: str) -> Contract:
    """``contract`` if it is the port of the asset ``domain/name`` (its product, or a kept previous
    major ``<product>_v<N>``); a step never publishes under another product's contract."""
    if contract.domain != domain or name not in (contract.name, f"{contract.name}_v{contract.major}"):
        raise ValueError(f"{domain}/{name} cannot be published under the contract of {contract.id!r} v{contract.major}")
    return contract


def port_name(contract: Contract, variant: str = "full") -> str:
    """How errors name a port: ``claims.claims v1`` (``... (masked)``)."""
    return f"{contract.id} v{contract.major}" + ("" if variant == "full" else f" ({variant})")


def _published(lake: Lake, relpath: str, rows: int, version: int) -> Published:
    stored = delta.size(lake, relpath)
    return Published(lake.uri(relpath), rows, delta.version_bytes(lake, relpath, version), version, stored)


def rows_outside(lake: Lake, contract: Contract, keys: list[str]) -> int:
    """Rows the published port keeps on days other than ``keys``: what a partition publish of those
    days leaves in place (0 before the first publish).

    The table's rows as its commits logged them, less the rows on the run's days, which are read
    (the partition column alone) only from the data files whose statistics may hold those days: a
    new day's rows are in no older file, and then nothing is read. A table whose log has no row
    count for some file is counted from its partition column."""
    import pyarrow.compute as pc

    layout = partitions.of(contract)
    if layout is None or not keys:
        return 0
    relpath = Lake.port_path(contract.domain, contract.name, contract.major)
    base = delta.snapshot(lake, relpath, port_name(contract))
    if base is None or layout.column not in {f.name for f in base.schema().fields}:
        return 0
    logged = delta.logged_rows(base)
    if logged is None:
        return int(pc.sum(pc.invert(partitions.on_days(base.to_pyarrow_table(columns=[layout.column])[layout.column], keys))).as_py() or 0)
    ordered = sorted(keys)
    within = delta.read_snapshot(lake, relpath, base, [layout.column], window_filters_for(layout, (ordered[0], ordered[-1])))
    return logged - int(pc.sum(partitions.on_days(within[layout.column], keys)).as_py() or 0)


def keys_unique_across(lake: Lake, relpath: str, base, contract: Contract, partitioning: partitions.Partitioning, keys: list[str], table: pa.Table,
                       port: str) -> None:
    """Primary-key uniqueness across the whole table when only some days are replaced.

    The run's own rows were checked by the quality gate; here the primary key of every row the
    table keeps *outside* the days being replaced (only the key and partition columns are read) is
    checked against the new rows' keys, before anything is committed. A key on two days (a claim
    whose day moved) fails naming both.

    A one-column key is probed in the scan (the table's keys against the run's few, hashing the
    few), reading the key column alone, straight from the data files of ``base`` (the snapshot of
    the table at ``relpath``), and only from the files whose statistics say they may hold a key in
    the run's range: a new day's keys are nowhere else, and then nothing more is read. Only rows
    whose key the run also has are read with their day."""
    import pyarrow.compute as pc

    pk = contract.primary_key
    if base is None or not pk or table.num_rows == 0:
        return
    present = {f.name for f in base.schema().fields}
    if not set(pk) <= present or partitioning.column not in present:
        return  # the table predates this key: the next whole publish rewrites it

    if len(pk) == 1:
        mine = table[pk[0]].combine_chunks().unique()
        bounds = pc.min_max(mine)
        # the keys' range first: the data files' statistics rule out every file outside it without
        # reading it (keys given in order, as claim and event numbers are, leave a new day's keys
        # in no older file), then the keys themselves in the files left
        probe = [(pk[0], ">=", bounds["min"].as_py()), (pk[0], "<=", bounds["max"].as_py()), (pk[0], "in", mine)]
        if delta.read_snapshot(lake, relpath, base, [pk[0]], probe).num_rows == 0:
            return
        kept = delta.read_snapshot(lake, relpath, base, [*pk, partitioning.column], probe)
    else:
        kept = base.to_pyarrow_table(columns=[*pk, partitioning.column])
    kept = kept.filter(pc.invert(partitions.on_days(kept[partitioning.column], keys)))
    if kept.num_rows == 0:
        return
    if len(pk) == 1:
        dupes = table.filter(pc.is_in(table[pk[0]], value_set=kept[pk[0]].combine_chunks())).select(pk)
    else:
        dupes = table.select(pk).join(kept.select(pk), keys=pk, join_type="inner")
    if dupes.num_rows:
        sample = dupes.slice(0, 3).to_pylist()
        shown = "; ".join(", ".join(f"{k}={row[k]}" for k in pk) for row in sample)
        raise partitions.PartitionError(
            f"port {port}, partition {partitions.describe_keys(keys)}: {dupes.num_rows} primary key(s) ({', '.join(pk)}) already "
            f"exist on other days of the table (e.g. {shown}); the primary key is unique across all partitions. Nothing was published"
        )


def publish(lake: Lake, contract: Contract, table: pa.Table, partition_keys: list[str] | None = None, *, gate=None,
            home: str | None = None) -> list[tuple[str, Published]]:
    """One Delta commit per variant; fails without committing anything when another writer got there first.

    ``partition_keys`` (days, for a partitioned contract): only those days are replaced
    (:mod:`mesh_platform.products.partitions`); every row must fall in them, and the primary key stays unique
    across the whole table (:func:`keys_unique_across`).

    ``gate``: a check still running (:mod:`mesh_platform.storage.gate`, the primary key's uniqueness):
    the full table's data files are written meanwhile and its commit waits for the check; when the
    check fails nothing is committed, to either variant, and its exception is raised.

    ``home``: the mesh home whose local masking key pseudonymizes the masked variant when
    ``MESH_MASKING_KEY`` is not set (:func:`mesh_platform.governance.masking.masking_key`).
    """
    full_path = Lake.port_path(contract.domain, contract.name, contract.major)
    masked_path = Lake.port_path(contract.domain, contract.name, contract.major, variant="masked")
    sensitive = bool(sensitive_columns(contract))
    # both snapshots first: a concurrent publish of either variant fails this one before it commits
    full_base = delta.snapshot(lake, full_path, port_name(contract))
    masked_base = delta.snapshot(lake, masked_path, port_name(contract, "masked")) if sensitive else None
    previous = None if full_base is None else full_base.version()  # (a write moves the snapshot object on)
    # the contract itself travels with every commit: a consumer can load against it when the
    # producer's contract file is broken later (:class:`LastPublished`)
    about = {"mesh.contract.id": contract.id, "mesh.contract.version": contract.version, CONTRACT_SNAPSHOT: contract_snapshot(contract)}
    predicate = None
    partitioning = partitions.of(contract) if partition_keys is not None else None
    if partitioning is not None:
        partitions.check_rows(table, partitioning, partition_keys, port_name(contract))
        keys_unique_across(lake, full_path, full_base, contract, partitioning, partition_keys, table, port_name(contract))
        predicate = partitions.predicate(partitioning, partition_keys)
        about["mesh.partitions"] = partitions.describe_keys(partition_keys)
    version = delta.write(lake, full_path, table, port_name(contract), full_base, {**about, "mesh.variant": "full"}, predicate=predicate, gate=gate)
    written = [("full", _published(lake, full_path, table.num_rows, version))]
    if partitioning is not None:  # the run's rows are some days' only: say how many the table holds
        written[0] = ("full", replace(written[0][1], table_rows=delta.version_rows(lake, full_path, version)))
    if sensitive:
        masked, _, _ = mask_table(table, contract, home=home)
        try:
            masked_version = delta.write(
                lake, masked_path, masked, port_name(contract, "masked"), masked_base,
                {**about, "mesh.variant": "masked", "mesh.full_version": str(version)}, predicate=predicate,
            )
        except BaseException:
            delta.undo(lake, full_path, port_name(contract), previous, version)
            raise
        written.append(("masked", _published(lake, masked_path, masked.num_rows, masked_version)))
    # the materialization about to be recorded must name the current version: a publish that began
    # after this one's commit and already committed over it is the one to record, not this one
    latest = delta.current_version(lake, full_path, port_name(contract))
    if latest != version and not _only_other_days_since(lake, full_path, contract, version, partition_keys if partitioning is not None else None):
        raise delta.ConcurrentPublish(
            f"port {port_name(contract)}: another publish committed version {latest} right after this one's version "
            f"{version}; this run records nothing, the other run's materialization names the current version"
        )
    return written


def _only_other_days_since(lake: Lake, path: str, contract: Contract, version: int, keys: list[str] | None) -> bool:
    """Whether every commit after ``version`` replaced days other than ``keys`` (a partitioned port).

    Two runs over different days of one port (the landing sensor's range and automation's, two
    backfill ranges) commit one after the other, each replacing its own days only: the earlier
    one's days are current in the later version too, so its materialization stays true."""
    if keys is None:
        return False
    mine = set(keys)
    for commit in delta.history(lake, path, port_name(contract)):
        if commit.get("version", -1) <= version:
            continue
        described = commit.get("mesh.partitions")
        if described is None or partitions.keys_described(str(described)) & mine:
            return False
    return True


def delta_metadata(written: list[tuple[str, Published]]) -> dict:
    """What a publish records on its materialization: the versions it committed, the bytes kept."""
    from mesh_platform.foundations import metadata as md

    versions = dict((variant, p.version) for variant, p in written)
    out = {md.DELTA_VERSION: versions["full"], md.STORED_BYTES: sum(p.stored or 0 for _, p in written)}
    if "masked" in versions:
        out[md.MASKED_VERSION] = versions["masked"]
    return out


def read_aggregate(lake: Lake, consumer: str, contract: Contract, query: dict, run_id: str | None = None, version: int | None = None,
                   token: str | None = None, ledger: str | None = None) -> Release:
    """A differentially private release for an aggregate-only grant; the budget is debited first.

    Where the deployment runs a privacy release service (``MESH_PRIVACY_SERVICE`` and this domain's
    ``MESH_PRIVACY_TOKEN``: ``mesh stack up``), the release is computed there, by the only identity
    whose storage keys may read the product (:mod:`mesh_platform.deployment.privacy_service`); the service knows
    the consumer by its token, whatever ``consumer`` says. Otherwise (``mesh dev``, one local lake)
    it is computed here. ``token``: the consumer's, when this process asks on a consumer's behalf
    (``mesh serve``, which knows the caller from its verified JWT). ``ledger``: the privacy ledger a
    release computed here debits (:func:`mesh_platform.governance.privacy.ledger_url` of the mesh's
    home; without it, the process's ``MESH_PRIVACY_LEDGER``).
    """
    import os

    service, token = os.environ.get("MESH_PRIVACY_SERVICE"), token or os.environ.get("MESH_PRIVACY_TOKEN")
    if service and token:
        aggregate = Aggregate.from_metadata(query)
        decision = authorize(consumer, contract, aggregate=True)  # refused here first, with the grant's reason
        frame, epsilon, remaining = request_release(service, token, contract.id, contract.major, query, run_id, version)
        return Release(frame, epsilon, remaining, aggregate.columns(decision.grant.privacy.unit))
    return release_aggregate(lake, consumer, contract, query, run_id, version, ledger)


def release_aggregate(lake: Lake, consumer: str, contract: Contract, query: dict, run_id: str | None = None, version: int | None = None,
                      ledger: str | None = None) -> Release:
    """The release computed in this process, reading the product with this process's storage keys;
    the epsilon is debited from ``ledger`` (a SQLAlchemy URL; :class:`PrivacyLedger` says the default)."""
    import json

    aggregate = Aggregate.from_metadata(query)
    decision = authorize(consumer, contract, aggregate=True)
    budget = decision.grant.privacy
    from mesh_platform.contracts.registry import default_domains_root
    from mesh_platform.governance.quotas import for_domain

    quota = for_domain(consumer, default_domains_root() / consumer).get("privacy_epsilon")
    remaining = PrivacyLedger(ledger).spend(consumer, contract.id, aggregate.epsilon, budget.epsilon, json.dumps(query, sort_keys=True), run_id, quota=quota)
    columns = aggregate.columns(budget.unit)
    table, _ = delta.read(lake, Lake.port_path(contract.domain, contract.name, contract.major), port_name(contract), columns, version)
    frame = compute(table.to_pandas(), contract, aggregate, budget.unit, budget.max_contributions)
    return Release(frame, aggregate.epsilon, remaining, columns)


def window_filters(contract: Contract, days: tuple[str, str] | None) -> list[tuple] | None:
    """pyarrow filters selecting the days ``first..last`` of a partitioned port (None: every row)."""
    partitioning = partitions.of(contract)
    if partitioning is None or days is None:
        return None
    return window_filters_for(partitioning, days)


def window_filters_for(partitioning: partitions.Partitioning, days: tuple[str, str]) -> list[tuple]:
    import datetime as dt

    first, last = partitions.day(days[0]), partitions.day(days[1]) + dt.timedelta(days=1)
    if partitioning.logical_type == "timestamp":
        first, last = dt.datetime.combine(first, dt.time()), dt.datetime.combine(last, dt.time())
    return [(partitioning.column, ">=", first), (partitioning.column, "<", last)]


def _key_values(contract: Contract, decision: AccessDecision, column: str, values: list) -> pa.Array:
    """A lookup's keys as an Arrow array of the key column's type as the consumer reads it (text
    where the grant pseudonymizes it); keys of another type are an error naming the column."""
    from mesh_platform.contracts.enforcement import arrow_schema

    kind = pa.string() if column in decision.masked else arrow_schema(contract).field(column).type
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"lookup of {contract.id} by {column!r}: the keys are not {kind} values: {exc}") from None


def _decide(consumer: str, contract: Contract, columns: list[str] | None) -> tuple[AccessDecision, str, list[str], str]:
    """A read's decision: the grant's answer, the variant it reads (full or masked), the columns it
    gets, and that variant's path in the lake."""
    decision = authorize(consumer, contract, columns)
    variant = "masked" if decision.variant == "masked" else "full"
    wanted = [c for c in (columns or contract.column_names) if c not in decision.removed]
    return decision, variant, wanted, Lake.port_path(contract.domain, contract.name, contract.major, variant=variant)


def read(lake: Lake, consumer: str, contract: Contract, columns: list[str] | None = None, versions=None, days: tuple[str, str] | None = None,
         keys: tuple[str, list] | None = None) -> PortRead:
    """``versions``: None (the latest), or ``{variant: version}`` to read (see :mod:`.versions`);
    ``days``: (first, last) partition keys to read of a partitioned port (every day when None);
    ``keys``: (column, values): only the rows whose column is one of the values (a lookup,
    :mod:`mesh_platform.storage.lookup`), filtered in the scan."""
    decision, variant, wanted, path = _decide(consumer, contract, columns)
    if keys is not None and keys[0] not in wanted:
        raise AccessDenied(consumer, contract.id, f"cannot look rows up by {keys[0]!r}: the grant does not give {consumer} that column")
    pinned = (versions or {}).get(variant)
    filters = window_filters(contract, days)
    if keys is not None:
        filters = [*(filters or []), (keys[0], "in", _key_values(contract, decision, *keys))]
    table, version = delta.read(lake, path, port_name(contract, variant), wanted, pinned, filters)
    return PortRead(table, decision, f"v{contract.major}/{variant}", wanted, version, variant)


@dataclass(frozen=True)
class PortFiles:
    """A read decided and pinned like :func:`read`'s, answered with the version's data files to
    scan in place (``columns`` of them) instead of a table: :func:`read_in_place`."""

    files: list[str]
    rows: int
    decision: AccessDecision
    port: str
    columns: list[str]
    version: int
    variant: str = "full"


def read_in_place(lake: Lake, consumer: str, contract: Contract, columns: list[str] | None = None, versions=None) -> PortFiles | None:
    """What :func:`read` would return (every day), as the local data files of the version to read
    and the columns the grant gives: the same decision (the grant, the masked variant, the removed
    columns), the same pinned version, the same checks of the version's files. For a reader on this
    machine that scans Parquet itself (a dbt domain's DuckDB) instead of receiving a copy. None
    when the lake is not on this machine or the version cannot be read from its files alone
    (:func:`mesh_platform.storage.delta.local_files`): read it with :func:`read`."""
    decision, variant, wanted, path = _decide(consumer, contract, columns)
    found = delta.local_files(lake, path, port_name(contract, variant), (versions or {}).get(variant))
    if found is None:
        return None
    files, rows, version = found
    return PortFiles(files, rows, decision, f"v{contract.major}/{variant}", wanted, version, variant)
