"""The one place a ``mesh serve`` request is decided, read, bounded and audited (HTTP and Flight alike).

Every request names the caller only through its verified token (:class:`.tokens.Caller`). A product
read resolves the contract (a previous major while it is served), makes the same access decision
as a Dagster read (:func:`mesh_platform.governance.access.authorize`: grant, pending or expired,
masked variant for uncleared consumers, removed columns), then scans the Delta port at the version
asked for (latest by default) batch by batch. Aggregate-only products answer only differentially
private queries (:meth:`MeshService.aggregate`, the same ledger and quota as a Dagster read).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
import pyarrow as pa

from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import MajorNotServed, mesh_registry
from mesh_platform.governance.access import AccessDenied, authorize
from mesh_platform.governance.privacy import ledger_url
from mesh_platform.storage import delta
from mesh_platform.storage.lake import Lake
from mesh_platform.storage.publishing import port_name, read_aggregate
from mesh_platform.products.ports import port_asset_key
from mesh_platform.serving import sql as sandbox
from mesh_platform.serving.audit import Auditor
from mesh_platform.serving.limits import Counter, LimitExceeded, Limits
from mesh_platform.serving.tokens import Caller

BATCH_ROWS = 64 * 1024
OPS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"}


class Refused(Exception):
    """A request refused with an HTTP-like status (400, 403, 404, 408, 410, 429) and the reason."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class Stream:
    """A response: its schema, and its record batches (counted, bounded, audited when they end)."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for fn in self.on_close:
            fn()
        self.on_close.clear()


def parse_filter(spec, columns: list[str]):
    """``[[column, op, value], ...]`` (all must hold) as a pyarrow expression over ``columns``."""
    import pyarrow.compute as pc

    if spec in (None, [], ""):
        return None
    if not isinstance(spec, list) or not all(isinstance(c, list) and len(c) in (2, 3) for c in spec):
        raise Refused(400, "filter: a list of [column, op, value] conditions, e.g. [[\"status\", \"=\", \"open\"]]")
    expression = None
    for condition in spec:
        column, op = condition[0], str(condition[1]).lower()
        value = condition[2] if len(condition) == 3 else None
        if column not in columns:
            raise Refused(400, f"filter: {column!r} is not a column you may read ({', '.join(columns)})")
        if op not in OPS:
            raise Refused(400, f"filter: unknown operator {op!r} (one of {', '.join(sorted(OPS))})")
        field_ = pc.field(column)
        if op in ("in", "not in"):
            if not isinstance(value, list):
                raise Refused(400, f"filter: {op!r} takes a list of values")
            term = field_.isin(value) if op == "in" else ~field_.isin(value)
        elif op == "is null":
            term = field_.is_null()
        elif op == "is not null":
            term = field_.is_valid()
        else:
            term = {"=": field_ == value, "==": field_ == value, "!=": field_ != value, "<": field_ < value,
                    "<=": field_ <= value, ">": field_ > value, ">=": field_ >= value}[op]
        expression = term if expression is None else expression & term
    return expression


class MeshService:
    def __init__(self, lake: Lake, domains_root: Path, instance: dg.DagsterInstance, memory_limit: str = "1GB", threads: int = 2,
                 home: str | None = None):
        """``home``: the mesh home whose privacy ledger aggregates debit (``MESH_PRIVACY_LEDGER`` wins
        when the deployment names one); None: the process must name one."""
        self.lake = lake
        self.home = home
        self.domains_root = Path(domains_root)
        self.registry = mesh_registry(self.domains_root)
        self.audit = Auditor(instance)
        self.limits = Limits(self.domains_root)
        self.memory_limit, self.threads = memory_limit, threads

    # -- what a caller may read ------------------------------------------------------------------

    def domains(self) -> set[str]:
        return {p.name for p in self.domains_root.iterdir() if p.is_dir() and (p / "domain.yaml").exists()}

    def products(self, caller: Caller) -> list[dict]:
        """Every product of the mesh with what this caller may do with it (rows, masked rows, aggregates, nothing)."""
        full = self.registry.full
        out = []
        for contract in sorted([*full.contracts, *full.previous], key=lambda c: (c.id, c.major)):
            if contract.retired():
                continue
            try:
                decision = authorize(caller.domain, contract, root=self.domains_root)
                access, reason = decision.variant, ""
            except AccessDenied as exc:
                access, reason = "none", exc.reason
                try:
                    authorize(caller.domain, contract, aggregate=True, root=self.domains_root)
                    access, reason = "aggregate", ""
                except AccessDenied:
                    pass
            current = full.get(contract.id).major
            name = contract.name if contract.major == current else f"{contract.name}_v{contract.major}"
            out.append({"product": contract.id, "major": contract.major, "sql_name": f"{contract.domain}.{name}",
                        "access": access, "reason": reason, "columns": contract.column_names})
        return out

    def _contract(self, caller: Caller, product: str, major: int | None, protocol: str) -> Contract:
        try:
            current = self.registry.get(product)
            return current if major is None else self.registry.get(product, major=major)
        except MajorNotServed as exc:
            self.audit.denied(None, caller.domain, product, str(exc), protocol, person=caller.subject)
            raise Refused(410, str(exc)) from None
        except LookupError as exc:
            message = str(exc).strip("'\"")
            self.audit.denied(None, caller.domain, product, message, protocol, person=caller.subject)
            raise Refused(404, message) from None

    def _key(self, contract: Contract) -> dg.AssetKey:
        return port_asset_key(contract, self.registry.get(contract.id).major)

    def _decide(self, caller: Caller, contract: Contract, columns: list[str] | None, protocol: str, query: str | None = None):
        try:
            decision = authorize(caller.domain, contract, columns, root=self.domains_root)
        except AccessDenied as exc:
            self.audit.denied(self._key(contract), caller.domain, contract.id, exc.reason, protocol, columns, query, caller.subject)
            raise Refused(403, str(exc)) from None
        if decision.variant == "aggregate":
            reason = f"{contract.id} is granted to {caller.domain!r} as differentially private aggregates only: POST /aggregate"
            self.audit.denied(self._key(contract), caller.domain, contract.id, reason, protocol, columns, query, caller.subject)
            raise Refused(403, reason)
        return decision

    def _dataset(self, caller: Caller, contract: Contract, decision, columns: list[str], version: int | None, protocol: str):
        variant = "masked" if decision.variant == "masked" else "full"
        path = Lake.port_path(contract.domain, contract.name, contract.major, variant=variant)
        try:
            return delta.dataset(self.lake, path, port_name(contract, variant), columns, version), variant
        except delta.VersionNotKept as exc:
            self.audit.denied(self._key(contract), caller.domain, contract.id, str(exc), protocol, columns, None, caller.subject)
            raise Refused(410, str(exc)) from None
        except FileNotFoundError as exc:
            raise Refused(404, str(exc)) from None
        except delta.PortTableError as exc:
            message = str(exc)
            status = 410 if version is not None and ("version" in message) else 502
            self.audit.denied(self._key(contract), caller.domain, contract.id, message, protocol, columns, None, caller.subject)
            raise Refused(status, message) from None

    def _slot(self, caller: Caller, protocol: str):
        """One of the caller's concurrent requests, held from the request's start until its stream
        closes (a query's execution included); (quota, release) or :class:`Refused` (429) at once."""
        quota = self.limits.quota(caller.domain)
        slot = self.limits.slot(caller.domain, quota)
        try:
            slot.__enter__()
        except LimitExceeded as exc:
            self.audit.denied(None, caller.domain, "request", str(exc), protocol, person=caller.subject)
            raise Refused(429, str(exc)) from None
        released = []

        def release() -> None:
            if not released:
                released.append(True)
                slot.__exit__(None, None, None)

        return quota, release

    def _stream(self, caller: Caller, quota, release: Callable[[], None], schema: pa.Schema, batches: Iterator[pa.RecordBatch],
                finish: Callable[[Counter, str], None]) -> Stream:
        """Counted and bounded by the caller's quotas; audited and the slot released when it closes."""
        counter = Counter(quota, caller.domain)
        state = {"outcome": "served", "done": False}

        def run() -> Iterator[pa.RecordBatch]:
            try:
                yield from counter.watch(batches)
            except LimitExceeded as exc:
                state["outcome"] = f"stopped: {exc}"
                raise
            except GeneratorExit:
                state["outcome"] = "the client went away"
                raise
            except Exception as exc:
                state["outcome"] = f"failed: {exc}"
                raise

        def close() -> None:
            if not state["done"]:
                state["done"] = True
                release()
                finish(counter, "" if state["outcome"] == "served" else state["outcome"])

        return Stream(schema, run(), [close])

    # -- product reads ------------------------------------------------------------------------------

    def read(self, caller: Caller, product: str, major: int | None = None, columns: list[str] | None = None,
             filter_spec=None, version: int | None = None, protocol: str = "http") -> Stream:
        quota, release = self._slot(caller, protocol)
        try:
            return self._read(caller, quota, release, product, major, columns, filter_spec, version, protocol)
        except BaseException:
            release()
            raise

    def _read(self, caller, quota, release, product, major, columns, filter_spec, version, protocol) -> Stream:
        contract = self._contract(caller, product, major, protocol)
        if columns is not None:
            unknown = [c for c in columns if c not in contract.column_names]
            if unknown:
                reason = f"{contract.id} has no column(s) {', '.join(unknown)} (it has {', '.join(contract.column_names)})"
                self.audit.denied(self._key(contract), caller.domain, contract.id, reason, protocol, columns, None, caller.subject)
                raise Refused(400, reason)
        decision = self._decide(caller, contract, columns, protocol)
        wanted = [c for c in (columns or contract.column_names) if c not in decision.removed]
        readable = [c for c in contract.column_names if c not in decision.removed]
        expression = parse_filter(filter_spec, readable)  # on any column the caller may read, returned or not
        filtered = [c[0] for c in (filter_spec or []) if c[0] not in wanted]
        (dataset, read_version), variant = self._dataset(caller, contract, decision, wanted + sorted(set(filtered)), version, protocol)
        # little read-ahead: a response holds a few batches, not a file's worth, so that many
        # concurrent readers stay within a bounded memory (benchmarks/serving.py measures it)
        scanner = dataset.scanner(columns=wanted, filter=expression, batch_size=BATCH_ROWS, batch_readahead=6, fragment_readahead=1)
        key = self._key(contract)

        def finish(counter: Counter, outcome: str) -> None:
            self.audit.served(key, caller, contract.id, f"v{contract.major}/{variant}", wanted, decision.masked, decision.removed,
                              counter.rows, counter.bytes, read_version, protocol, outcome=outcome)

        return self._stream(caller, quota, release, scanner.projected_schema, scanner.to_batches(), finish)

    # -- SQL --------------------------------------------------------------------------------------------

    def sql(self, caller: Caller, query: str, protocol: str = "http") -> Stream:
        quota, release = self._slot(caller, protocol)
        try:
            return self._sql(caller, quota, release, query, protocol)
        except BaseException:
            release()
            raise

    def _sql(self, caller: Caller, quota, release, query: str, protocol: str) -> Stream:
        try:
            sandbox.check_statement(query)
            referenced = sandbox.referenced_products(query)
        except sandbox.SqlRefused as exc:
            self.audit.denied(None, caller.domain, "sql", str(exc), protocol, None, query, caller.subject)
            raise Refused(400, str(exc)) from None
        if not referenced:
            reason = "the query names no product: read them as <domain>.<product> (GET /products lists yours)"
            self.audit.denied(None, caller.domain, "sql", reason, protocol, None, query, caller.subject)
            raise Refused(400, reason)
        opened = []
        for ref in referenced:
            contract = self._contract(caller, ref.product, ref.major, protocol)
            decision = self._decide(caller, contract, None, protocol, query)
            columns = [c for c in contract.column_names if c not in decision.removed]
            (dataset, read_version), variant = self._dataset(caller, contract, decision, columns, None, protocol)
            opened.append((ref, contract, decision, columns, dataset, read_version, variant))
        con = sandbox.connect(self.memory_limit, self.threads)
        timed_out = threading.Event()

        def expire() -> None:  # the caller's serve_query_seconds: DuckDB stops the query where it is
            timed_out.set()
            con.interrupt()

        timer = threading.Timer(quota.seconds, expire)
        timer.daemon = True
        try:
            for i, (ref, _contract, _decision, _columns, dataset, _version, _variant) in enumerate(opened):
                sandbox.register(con, i, ref.sql_name, dataset)
            sandbox.lock(con)
            timer.start()
            reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
        except Exception as exc:  # noqa: BLE001 - DuckDB's own refusals (files, extensions) and errors
            timer.cancel()
            con.close()
            status, message = _sql_error(exc, timed_out.is_set(), quota.seconds)
            self.audit.denied(self._key(opened[0][1]), caller.domain, "sql", message, protocol, None, query, caller.subject)
            raise Refused(status, message) from None

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    yield batch
            except Exception as exc:  # noqa: BLE001
                status, message = _sql_error(exc, timed_out.is_set(), quota.seconds)
                raise Refused(status, message) from None

        def finish(counter: Counter, outcome: str) -> None:
            timer.cancel()
            con.close()
            for ref, contract, decision, columns, _, read_version, variant in opened:
                used = [c for c in columns if c in ref.columns] or columns
                self.audit.served(self._key(contract), caller, contract.id, f"v{contract.major}/{variant}", used, decision.masked,
                                  decision.removed, counter.rows, counter.bytes, read_version, protocol, query, outcome)

        return self._stream(caller, quota, release, reader.schema, batches(), finish)

    # -- differentially private aggregates ------------------------------------------------------------

    @staticmethod
    def _privacy_token(domain: str) -> str | None:
        """The caller domain's token for the privacy release service, where the deployment runs one
        (``MESH_PRIVACY_TOKENS``: a JSON file of domain -> token, readable by this service alone)."""
        import json
        import os

        path = os.environ.get("MESH_PRIVACY_TOKENS")
        if not path:
            return None
        try:
            return json.loads(Path(path).read_text()).get(domain)
        except (OSError, ValueError):
            return None

    def aggregate(self, caller: Caller, body: dict, protocol: str = "http") -> pa.Table:
        """A differentially private release of an aggregate-only product (``{"product", "group_by",
        "measures": [{"kind": "count"}, {"kind": "mean", "column", "lower", "upper"}], "epsilon"}``)."""
        from mesh_platform.governance.privacy import Aggregate, Measure, PrivacyBudgetExhausted, ReleaseRefused, validate

        if not isinstance(body, dict) or "product" not in body:
            raise Refused(400, 'send {"product": "<domain>.<product>", "group_by": [...], "measures": [...], "epsilon": e}')
        contract = self._contract(caller, str(body["product"]), body.get("major"), protocol)
        try:
            aggregate = Aggregate(body.get("group_by") or [], [Measure(**m) for m in body.get("measures") or []], float(body["epsilon"]))
            validate(aggregate, contract)
        except (KeyError, TypeError, ValueError) as exc:
            raise Refused(400, f"aggregate query: {str(exc).strip(chr(34))}") from None
        try:
            authorize(caller.domain, contract, aggregate=True, root=self.domains_root)
            release = read_aggregate(self.lake, caller.domain, contract, aggregate.as_metadata(), run_id=f"serve-{uuid.uuid4().hex[:12]}",
                                     token=self._privacy_token(caller.domain), ledger=ledger_url(self.home) if self.home else None)
        except (AccessDenied, PrivacyBudgetExhausted, ReleaseRefused) as exc:
            reason = getattr(exc, "reason", str(exc))
            self.audit.denied(self._key(contract), caller.domain, contract.id, reason, protocol, None, None, caller.subject)
            raise Refused(403, str(exc)) from None
        table = pa.Table.from_pandas(release.frame, preserve_index=False)
        self.audit.served(self._key(contract), caller, contract.id, f"v{contract.major}/aggregate", release.columns, [], [],
                          table.num_rows, table.nbytes, None, protocol, outcome=f"epsilon {release.epsilon}, {release.remaining} left")
        return table


def _sql_error(exc: Exception, timed_out: bool, seconds: float) -> tuple[int, str]:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if timed_out or "INTERRUPT" in text.upper():
        return 408, f"the query ran longer than {seconds:g} s (the quota serve_query_seconds) and was cancelled"
    if "Permission Error" in text or "disabled" in text:
        return 403, f"refused: {text} (the service reads only the products you are granted)"
    if "Out of Memory" in text or "memory" in text.lower():
        return 413, f"the query needs more memory than a query may use: {text}"
    return 400, text


__all__ = ["MeshService", "Refused", "Stream", "parse_filter"]
