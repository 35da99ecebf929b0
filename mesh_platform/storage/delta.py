"""Output ports as Delta Lake tables (delta-rs): one commit per publish, reads at a version.

An output port is a Delta table at ``<lake>/<domain>/<product>/v<major>/``; its masked variant is a
table of its own at the sibling ``.../v<major>_masked/`` (never below the full table, so nothing done
to one table, a vacuum included, can touch the other, and an IAM prefix grant on one never covers
the other). Private intermediates and quarantined rows stay plain Parquet files (:mod:`.lake`).

- **Write**: a publish is one Delta commit (``mode="overwrite"``) against the snapshot the publish
  started from, with ``max_commit_retries=0``: if any other writer committed to the table since, the
  commit fails (:class:`ConcurrentPublish`, naming the port) instead of being rebased over it.
  Data files are written first and only the commit (one ``_delta_log/<version>.json``, created with
  put-if-absent) makes them visible, so a failed or killed publish leaves the table at its previous
  version; its unreferenced files are removed by :func:`vacuum` after a grace period.
- **S3**: delta-rs talks to S3 itself; :func:`storage_options` hands it the lake's AWS environment
  (endpoint, region, keys, plain HTTP for a local endpoint) and ``conditional_put=etag``: commits are
  put with ``If-None-Match: *``, which S3 (since 2024) and moto honour, so two concurrent writers
  can never both create one version. Unsafe rename is never enabled.
- **Read**: :func:`read` loads the version asked for (the one the port's last materialization
  recorded, or the one an earlier run read when replaying, :mod:`.versions`), only the columns
  wanted. A missing or damaged ``_delta_log`` is a :class:`PortTableError` naming the port; nothing
  is read from the data files without the log.
- **Retention**: :func:`vacuum` deletes the data files no kept version needs. It does not commit to
  the log (delta-rs's own vacuum adds two commits, which would move the version a materialization
  names), so a vacuum never changes what is current.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

LOG = "_delta_log"
ORPHAN_GRACE_SECONDS = 3600  # a data file no commit names yet may belong to a publish in flight


class PortTableError(RuntimeError):
    """A port's Delta table cannot be used; the message names the port and what is wrong."""


class ConcurrentPublish(PortTableError):
    """Another writer committed to the port while this publish ran; this publish committed nothing."""


class VersionNotKept(PortTableError):
    """The version asked for was vacuumed (retention) or never existed."""


@dataclass(frozen=True)
class Snapshot:
    """The state a publish starts from: the table's version, or None when the port has none yet."""

    version: int | None


def storage_options(lake) -> dict[str, str] | None:
    """delta-rs storage options for the lake: None locally; the AWS environment on S3."""
    if lake.is_local:
        return None
    env = os.environ
    options: dict[str, str] = {"conditional_put": "etag"}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if env.get(key):
            options[key] = env[key]
    return options


def table_uri(lake, relpath: str) -> str:
    """What delta-rs opens: a local absolute path, or ``s3://bucket/key``."""
    full = lake._full(relpath)
    return full if lake.is_local else f"s3://{full}"


def _files(lake, relpath: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(lake._full(relpath), recursive=True, allow_not_found=True)
    return [i for i in lake.fs.get_file_info(selector) if i.type == pafs.FileType.File]


def _has_log(lake, relpath: str) -> bool:
    prefix = f"{lake._full(relpath)}/{LOG}/"
    return any(i.path.startswith(prefix) and i.path.endswith(".json") for i in _files(lake, f"{relpath}/{LOG}"))


def _damaged(port: str, uri: str, detail: str) -> PortTableError:
    detail = detail if len(detail) <= 240 else detail[:240] + "..."
    return PortTableError(
        f"port {port}: the Delta log at {uri}/{LOG} is damaged or missing ({detail}); nothing was read from it. "
        f"Restore {LOG} from a backup, or republish the port (materialize its producer) after moving the folder away"
    )


# What storage says when it refuses (S3's error code, or the HTTP status object_store reports). Not a
# bare "403": a path or a file id in a message that has nothing to do with access can contain it.
_DENIED = re.compile(r"AccessDenied|Access Denied|ACCESS_DENIED|\b403 Forbidden\b|\bForbidden\b|status(?: code)?:? ?403\b")


def _raise_if_denied(port: str, uri: str, text: str) -> None:
    if _DENIED.search(text):
        raise PortTableError(
            f"port {port}: access denied to {uri} (the credentials' IAM policy does not grant this table; see `mesh iam`)"
        ) from None


def _open(lake, relpath: str, port: str, version: int | None = None):
    """The DeltaTable at ``version`` (latest when None); FileNotFoundError when nothing was published."""
    from deltalake import DeltaTable

    uri = table_uri(lake, relpath)
    if not _has_log(lake, relpath):
        if _files(lake, relpath):
            raise _damaged(port, lake.uri(relpath), f"data files but no commit in {LOG}/")
        raise FileNotFoundError(f"port {port}: nothing published at {lake.uri(relpath)} yet: materialize its producer first")
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(lake))
    except Exception as exc:  # noqa: BLE001 - every delta-rs failure to load the log becomes one message
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _raise_if_denied(port, lake.uri(relpath), str(exc))
        if version is not None and ("version" in text.lower() or "not found" in text.lower()):
            latest = _latest_or_none(lake, relpath)
            if latest is not None and version > latest:
                raise _damaged(port, lake.uri(relpath), f"version {version} was recorded as published, but the log ends at version {latest}") from None
        raise _damaged(port, lake.uri(relpath), text) from None


def _commit_actions(lake, relpath: str, version: int) -> list[dict]:
    path = f"{lake._full(relpath)}/{LOG}/{version:020d}.json"
    with lake.fs.open_input_stream(path) as src:
        return [json.loads(line) for line in src.read().decode().splitlines() if line.strip()]


def verify(lake, relpath: str, port: str, dt) -> None:
    """Check that the commit of the version ``dt`` is at is whole: a publish's commit (an overwrite,
    or the restore that takes one back) names every data file of its version, and its own metrics
    say how many. An empty, truncated or altered commit file fails here instead of serving another
    version's files under this version's number."""
    version = dt.version()
    try:
        actions = _commit_actions(lake, relpath, version)
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, a missing file
        raise _damaged(port, lake.uri(relpath), f"commit {version} cannot be read: {exc}") from None
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), None)
    if not info or "operation" not in info:
        raise _damaged(port, lake.uri(relpath), f"commit {version} has no commitInfo: it is empty or truncated")
    adds = {a["add"]["path"] for a in actions if "add" in a}
    metrics = info.get("operationMetrics") or {}
    if info["operation"] == "WRITE":
        if "num_added_files" in metrics and metrics["num_added_files"] != len(adds):
            raise _damaged(port, lake.uri(relpath), f"commit {version} names {len(adds)} data file(s), its metrics {metrics['num_added_files']}")
        root = lake._full(relpath)
        files = {_relative(u, root) for u in dt.file_uris()}
        parameters = info.get("operationParameters") or {}
        # a whole overwrite's version is exactly its own files; a partition's overwrite (a predicate)
        # keeps the files of the other days, but still reads every file it added
        if parameters.get("mode") == "Overwrite" and (files != adds if not parameters.get("predicate") else not adds <= files):
            raise _damaged(port, lake.uri(relpath), f"version {version} would read files its overwrite commit does not name")


def _latest_or_none(lake, relpath: str) -> int | None:
    from deltalake import DeltaTable

    try:
        return DeltaTable(table_uri(lake, relpath), storage_options=storage_options(lake)).version()
    except Exception:  # noqa: BLE001
        return None


def snapshot(lake, relpath: str, port: str):
    """The table as a publish starts from it (None when the port has no table yet)."""
    try:
        return _open(lake, relpath, port)
    except FileNotFoundError:
        return None


def current_version(lake, relpath: str, port: str) -> int | None:
    table = snapshot(lake, relpath, port)
    return None if table is None else table.version()


def write(lake, relpath: str, table: pa.Table, port: str, base, commit_metadata: dict[str, str] | None = None,
          predicate: str | None = None, *, gate=None) -> int:
    """Overwrite the port with ``table`` in one commit on top of ``base`` (from :func:`snapshot`).

    With ``predicate`` (SQL over the table's columns, :func:`mesh_platform.products.partitions.predicate`)
    only the rows matching it are replaced: a partition's overwrite. Every row of ``table`` must
    match it; the caller checks that first, with a message naming the partition.

    Returns the committed version. Fails with :class:`ConcurrentPublish` when another writer
    committed since ``base`` was taken: the commit is never rebased over theirs.

    ``gate`` (a :class:`mesh_platform.storage.gate.CommitGate`): a check still running; the data files
    are written meanwhile and only the commit waits for it. When it fails nothing is committed and
    its exception is raised.
    """
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    expected = 0 if base is None else base.version() + 1
    if lake.is_local:
        lake.fs.create_dir(lake._full(relpath), recursive=True)
    properties = CommitProperties(custom_metadata=commit_metadata or {}, max_commit_retries=0)
    target = base if base is not None else table_uri(lake, relpath)
    data = table if gate is None else _gated(table, gate)
    try:
        write_deltalake(
            target, data, mode="overwrite", commit_properties=properties,
            storage_options=None if base is not None else storage_options(lake),
            # a whole overwrite may change the schema (a new minor adds a column); a partition's
            # overwrite merges it, so the days it does not touch keep their rows (new column null)
            **({"predicate": predicate, "schema_mode": "merge"} if predicate and base is not None else {"schema_mode": "overwrite"}),
        )
    except CommitFailedError as exc:
        raise ConcurrentPublish(
            f"port {port}: another publish committed version {expected} of {lake.uri(relpath)} while this one ran; "
            "this publish committed nothing. A product is published by one run at a time: rerun it after "
            "the other run finished"
        ) from None
    except Exception as exc:  # noqa: BLE001
        if gate is not None and gate.error is not None:
            raise gate.error from None  # the check failed: the stream ended with it, nothing was committed
        _raise_if_denied(port, lake.uri(relpath), str(exc))
        if base is None and "already exists" in str(exc).lower():
            raise ConcurrentPublish(
                f"port {port}: another publish created {lake.uri(relpath)} while this one ran; this publish committed nothing"
            ) from None
        raise
    return expected


def _gated(table: pa.Table, gate):
    """What ``write_deltalake`` gets when a gate is given: the stream whose end waits for the check
    (an empty table has nothing to overlap: the check is waited for first)."""
    if table.num_rows == 0:
        gate.wait()
        return table
    return gate.stream(table)


def read(lake, relpath: str, port: str, columns: list[str] | None = None, version: int | None = None,
         filters: list[tuple] | None = None) -> tuple[pa.Table, int]:
    """The port at ``version`` (latest when None) and the version read; ``filters`` (pyarrow DNF,
    e.g. a partition window) select rows, skipping the data files whose statistics rule them out."""
    dt = _open(lake, relpath, port, version)
    verify(lake, relpath, port, dt)
    try:
        table = read_snapshot(lake, relpath, dt, columns, filters)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _raise_if_denied(port, lake.uri(relpath), str(exc))
        if "not found" in text.lower() or "does not exist" in text.lower() or isinstance(exc, FileNotFoundError):
            raise VersionNotKept(
                f"port {port}: version {dt.version()} is no longer kept (its data files were vacuumed by the "
                f"contract's retention, or removed): {text}"
            ) from None
        raise PortTableError(f"port {port}: cannot read version {dt.version()} of {lake.uri(relpath)}: {text}") from None
    return table, dt.version()


def dataset(lake, relpath: str, port: str, columns: list[str] | None = None, version: int | None = None):
    """The port at ``version`` (latest when None) as a pyarrow Dataset of ``columns`` (all when
    None), and the version: what a streaming reader scans batch by batch, never the whole table in
    memory (``mesh serve``). The files are checked against the version's commit first, as
    :func:`read` does; a version whose files were vacuumed raises :class:`VersionNotKept`."""
    import pyarrow.dataset as ds

    dt = _open(lake, relpath, port, version)
    verify(lake, relpath, port, dt)
    schema = dt.schema().to_arrow()
    schema = pa.schema(schema) if not isinstance(schema, pa.Schema) else schema
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if _needs_delta_rs(dt):
        table = dt.to_pyarrow_table(columns=columns)  # partition columns live in the log: delta-rs reads them
        return ds.dataset(table), dt.version()
    files = _kept_files(lake, relpath, port, dt)
    if not files:
        return ds.dataset(schema.empty_table()), dt.version()
    return ds.dataset(files, schema=schema, format="parquet", filesystem=lake.fs), dt.version()


# reader features a version can be read with straight from its data files (anything else, such as
# deletion vectors or column mapping, is read through delta-rs)
PLAIN_READER_FEATURES = {"timestampNtz"}


def _needs_delta_rs(dt) -> bool:
    """Whether a version can be read only through delta-rs: partition columns (they live in the
    log), or reader features beyond :data:`PLAIN_READER_FEATURES`."""
    return bool(dt.metadata().partition_columns or set(dt.protocol().reader_features or []) - PLAIN_READER_FEATURES)


def _kept_files(lake, relpath: str, port: str, dt) -> list[str]:
    """The data files of the version ``dt`` is at, as full paths; :class:`VersionNotKept` when any
    is gone (one listing of the table, not a request per file)."""
    root = lake._full(relpath)
    files = [f"{root}/{_relative(u, root)}" for u in dt.file_uris()]
    present = {info.path for info in _files(lake, relpath)}
    missing = [f for f in files if f not in present]
    if missing:
        raise VersionNotKept(
            f"port {port}: version {dt.version()} is no longer kept (its data files were vacuumed by the "
            f"contract's retention, or removed): {len(missing)} file(s) missing"
        )
    return files


def logged_rows(dt) -> int | None:
    """Rows of the version ``dt`` is at, from the record counts its commits logged (None when a file has none)."""
    import pyarrow.compute as pc

    counts = pa.table(dt.get_add_actions(flatten=True)).column("num_records")
    return None if counts.null_count else int(pc.sum(counts).as_py() or 0)


def local_files(lake, relpath: str, port: str, version: int | None = None) -> tuple[list[str], int, int] | None:
    """The data files of a version (latest when None) as paths on this machine, its row count and
    the version: what a local reader (DuckDB) scans in place instead of a copy. The version's commit
    is checked first and every file must exist, as for :func:`read` (:class:`VersionNotKept`
    otherwise). None when the version cannot be read that way: a lake that is not on this machine,
    a table that needs delta-rs's reader (partition columns, reader features), no data file, or a
    file whose commit logged no row count."""
    if not lake.is_local:
        return None
    dt = _open(lake, relpath, port, version)
    verify(lake, relpath, port, dt)
    if _needs_delta_rs(dt):
        return None
    files, rows = _kept_files(lake, relpath, port, dt), logged_rows(dt)
    return (files, rows, dt.version()) if files and rows is not None else None


def read_snapshot(lake, relpath: str, dt, columns: list[str] | None, filters: list[tuple] | None = None) -> pa.Table:
    """The version ``dt`` is at (a snapshot of the table at ``relpath``), with pyarrow from its data
    files (:func:`read_files`), else through delta-rs; no check of the files (:func:`read` does that)."""
    table = read_files(lake, relpath, dt, columns, filters)
    if table is None:  # delta-rs's filters take Python values
        plain = [(c, op, v.to_pylist() if isinstance(v, pa.Array) else v) for c, op, v in filters or []]
        table = dt.to_pyarrow_table(columns=columns, filters=plain or None)
    return table


def read_files(lake, relpath: str, dt, columns: list[str] | None, filters: list[tuple] | None = None) -> pa.Table | None:
    """The version ``dt`` is at, read with pyarrow straight from the data files its log names, or
    None when the table needs delta-rs's reader (partition columns, which live in the log; reader
    features beyond :data:`PLAIN_READER_FEATURES`).

    The files are the ones :func:`verify` just checked against the version's commit; pyarrow's
    dataset reader reads them about as fast as a raw ``pq.read_table`` and 5-25% faster than
    delta-rs's dataset in our probes (which also casts to the log's schema), see ``docs/io.md``.
    """
    import pyarrow.dataset as ds

    if _needs_delta_rs(dt):
        return None
    root = lake._full(relpath)
    files = [f"{root}/{_relative(u, root)}" for u in dt.file_uris()]
    schema = dt.schema().to_arrow()
    schema = pa.schema(schema) if not isinstance(schema, pa.Schema) else schema
    if not files:
        return schema.empty_table().select(columns) if columns is not None else schema.empty_table()
    # the log's schema, not the first file's: a partition's overwrite may have added a column that
    # the other days' files lack (read as null, as delta-rs does)
    expression = None
    if filters:
        import pyarrow.parquet as pq

        expression = pq.filters_to_expression(filters)
    return ds.dataset(files, schema=schema, format="parquet", filesystem=lake.fs).to_table(columns=columns, filter=expression)


def history(lake, relpath: str, port: str) -> list[dict[str, Any]]:
    """The commits of a port, newest first (``version``, ``timestamp`` in ms, operation, metadata)."""
    dt = snapshot(lake, relpath, port)
    return [] if dt is None else dt.history()


def size(lake, relpath: str) -> int:
    """Bytes the port keeps: every version's data files and the log (history included)."""
    return sum(i.size or 0 for i in _files(lake, relpath))


def kept_versions(commits: list[dict[str, Any]], versions: int | None, days: float | None, now: float | None = None) -> set[int]:
    """The versions a retention keeps: the latest always, the last ``versions``, those newer than ``days``."""
    if not commits:
        return set()
    now = time.time() if now is None else now
    ordered = sorted(commits, key=lambda c: c["version"], reverse=True)
    kept = {ordered[0]["version"]}
    if versions:
        kept |= {c["version"] for c in ordered[:versions]}
    if days is not None:
        kept |= {c["version"] for c in ordered if c.get("timestamp", 0) / 1000 >= now - days * 86400}
    return kept


def _relative(uri: str, root: str) -> str:
    for prefix in ("file://", "s3://", "s3a://"):
        if uri.startswith(prefix):
            uri = uri[len(prefix):]
    root = root.rstrip("/")
    return uri[len(root) + 1:] if uri.startswith(root + "/") else uri


def _logged_adds(lake, relpath: str) -> set[str]:
    """Every data file any commit still in the log added (relative paths)."""
    adds: set[str] = set()
    for info in _files(lake, f"{relpath}/{LOG}"):
        if not info.path.endswith(".json"):
            continue
        with lake.fs.open_input_stream(info.path) as src:
            for line in src.read().decode().splitlines():
                action = json.loads(line) if line.strip() else {}
                if "add" in action:
                    adds.add(action["add"]["path"])
    return adds


def vacuum(lake, relpath: str, port: str, versions: int | None, days: float | None, now: float | None = None,
           grace_seconds: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """Delete the data files no kept version reads; returns their paths (relative to the table).

    Files of a version outside the retention are deleted; a file no commit names (a failed
    publish's, or one in flight) only once older than ``grace_seconds``. The log is left as it is,
    so the table's version does not move; reading a vacuumed version fails (:class:`VersionNotKept`).
    """
    from deltalake import DeltaTable

    base = snapshot(lake, relpath, port)
    if base is None:
        return []
    now = time.time() if now is None else now
    root = lake._full(relpath)
    keep: set[str] = set()
    for version in kept_versions(base.history(), versions, days, now):
        dt = DeltaTable(table_uri(lake, relpath), version=version, storage_options=storage_options(lake))
        keep |= {_relative(u, root) for u in dt.file_uris()}
    logged = _logged_adds(lake, relpath)
    removed = []
    for info in _files(lake, relpath):
        rel = info.path[len(root) + 1:]
        if rel.startswith(f"{LOG}/") or rel in keep:
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else now
        if rel in logged or now - mtime > grace_seconds:
            lake.fs.delete_file(info.path)
            removed.append(rel)
    return sorted(removed)


def version_rows(lake, relpath: str, version: int) -> int | None:
    """Rows of one version, from the record counts its commits logged (None when a file has none)."""
    from deltalake import DeltaTable

    return logged_rows(DeltaTable(table_uri(lake, relpath), version=version, storage_options=storage_options(lake)))


def version_bytes(lake, relpath: str, version: int) -> int:
    """Bytes of the data files one version reads."""
    from deltalake import DeltaTable

    root = lake._full(relpath)
    sizes = {i.path[len(root) + 1:]: i.size or 0 for i in _files(lake, relpath)}
    dt = DeltaTable(table_uri(lake, relpath), version=version, storage_options=storage_options(lake))
    return sum(sizes.get(_relative(u, root), 0) for u in dt.file_uris())


def undo(lake, relpath: str, port: str, previous: int | None, version: int) -> None:
    """Take back the commit ``version`` of a publish whose other variant failed.

    The table goes back to version ``previous`` (a restore commit with its content); a port that had no
    table before loses the one this publish created. Only when ``version`` is still the latest:
    a later commit is someone else's and is left alone.
    """
    dt = snapshot(lake, relpath, port)
    if dt is None or dt.version() != version:
        return
    if previous is None:
        lake.fs.delete_dir_contents(lake._full(relpath), missing_dir_ok=True)
        return
    dt.restore(previous)
