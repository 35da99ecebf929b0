"""Quarantine: rows a domain turns away are kept, counted, checked and audited, never silently dropped.

A transform (a product's or a private intermediate's) that rejects source rows hands them to the
platform with a reason, by returning :class:`Screened` instead of a bare frame::

    rejects = Rejects()
    rows = rejects.layout(frame, expected=CLAIM_COLUMNS, file=path)        # whole file, if its columns differ
    rows = rejects.conflicting(rows, key="claim_ref", within="batch")       # one key, two states, one batch
    rows = rejects.unresolved(rows, "policy_no", policies["policy_id"], reason="unknown_policy")
    return rejects.screened(rows)                                          # or Screened(rows, {"reason": frame})

The platform then, in the same Dagster step (:func:`hold`, called by :mod:`mesh_platform.products.build`):

1. stores the rejected rows in the lake under the **domain's own** area,
   ``<lake>/<domain>/_quarantine/<asset>/<run id>/<reason>.parquet`` plus ``summary.json``: one
   folder per run, so the history stays. Each row keeps its original columns plus ``_reason`` and
   ``_detail`` (JSON: the file and its unexpected/missing columns, the unresolved column, the key
   in conflict). Email addresses and phone numbers in any text value are redacted first
   (:func:`redact_contact_details_in`): rejects come from sources, before a domain's own redaction.
   Nothing else reads there: no input port can name it, and the storage policy of
   every other domain (``mesh iam``) covers only the ports it was granted;
2. puts the count per reason in the step's output metadata (``mesh/quarantine``);
3. records an audit event (an asset observation with ``mesh/audit: quarantine``) that
   :func:`mesh_platform.governance.audit.audit_records` and ``mesh audit`` show;
4. for a product, evaluates the asset check ``quarantine`` against the contract's
   ``customProperties[quarantine]`` limits (:class:`~mesh_platform.contracts.model.QuarantineLimits`):
   passes at zero, warns above ``warnAbove``, fails above ``failAbove``, in which case nothing is
   published and the last good version stays.

Rows rejected by a private intermediate of the same domain are counted again by the products that
read it (their last materialization's counts are *carried*), because an intermediate has no
contract of its own: the product's check covers every row turned away on the way to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import dagster as dg
import numpy as np
import pandas as pd

from mesh_platform.contracts.model import Contract, QuarantineLimits
from mesh_platform.foundations import metadata as md
from mesh_platform.storage.lake import Lake

CHECK = "quarantine"
COUNTS = md.QUARANTINE
SCOPE = md.QUARANTINE_SCOPE
LOCATION = md.QUARANTINE_URI
TOTAL = md.QUARANTINED_ROWS
SUMMARY = "summary.json"
REASON = re.compile(r"^[a-z][a-z0-9_]*$")
EXAMPLES = 5  # offending values named in a rejection's detail

UNEXPECTED_COLUMNS = "unexpected_columns"
UNRESOLVED_REFERENCE = "unresolved_reference"
CONFLICTING_STATES = "conflicting_states"
MALFORMED_LINE = "malformed_line"
UNPARSEABLE_VALUE = "unparseable_value"
NO_PARTITION_DAY = "no_partition_day"


@dataclass(frozen=True)
class Rejection:
    """Rows turned away for one reason, with what a person needs to fix them (JSON-able ``detail``)."""

    reason: str
    rows: pd.DataFrame
    detail: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.reason, str) or not REASON.match(self.reason):
            raise ValueError(f"a quarantine reason must be snake_case (a-z, 0-9, _), got {self.reason!r}")
        if not isinstance(self.rows, pd.DataFrame):
            raise TypeError(f"rejected rows for {self.reason!r} must be a DataFrame, got {type(self.rows).__name__}")


class Rejects:
    """Collects what a transform rejects; each helper returns the rows it keeps."""

    def __init__(self) -> None:
        self.rejections: list[Rejection] = []

    def reject(self, rows: pd.DataFrame, reason: str, **detail: Any) -> None:
        if len(rows):
            self.rejections.append(Rejection(reason, rows, detail))

    def split(self, frame: pd.DataFrame, bad: pd.Series, reason: str, **detail: Any) -> pd.DataFrame:
        """Quarantine the rows where ``bad`` is true; return the others."""
        bad = pd.Series(bad, index=frame.index).fillna(False).astype(bool)
        self.reject(frame[bad], reason, **detail)
        return frame[~bad]

    def layout(self, frame: pd.DataFrame, expected: Iterable[str], file: str | Path, reason: str = UNEXPECTED_COLUMNS) -> pd.DataFrame:
        """A landed file whose columns differ from ``expected``: all its rows go to the quarantine.

        Returns ``frame`` when its columns are exactly the expected ones, else an empty frame with
        the expected columns (so it can still be concatenated with the good files).
        """
        expected = list(expected)
        unexpected = [c for c in frame.columns if c not in expected]
        missing = [c for c in expected if c not in frame.columns]
        if not unexpected and not missing:
            return frame
        self.reject(frame, reason, file=Path(file).name, unexpected=unexpected, missing=missing)
        return pd.DataFrame({c: pd.Series(dtype=frame[c].dtype if c in frame.columns else "object") for c in expected})

    def unresolved(self, frame: pd.DataFrame, column: str, known: Iterable, reason: str = UNRESOLVED_REFERENCE, references: str | None = None) -> pd.DataFrame:
        """Rows whose ``column`` (a foreign key, null included) is not among ``known``."""
        bad = pd.Series(~_is_in(frame[column], known), index=frame.index) | frame[column].isna()
        examples = _examples(frame.loc[bad, column])
        return self.split(frame, bad, reason, column=column, references=references, examples=examples)

    def conflicting(
        self,
        frame: pd.DataFrame,
        key: str | list[str],
        states: list[str] | None = None,
        within: str | None = None,
        reason: str = CONFLICTING_STATES,
    ) -> pd.DataFrame:
        """Every row of a key that has more than one state within the same ``within`` group.

        ``states`` are the columns compared (default: all but the key and ``within``). Exact
        duplicates are not a conflict and are kept; which of two different states is right cannot
        be known, so all rows of the key in that group are quarantined.
        """
        keys = [key] if isinstance(key, str) else list(key)
        group = keys + ([within] if within else [])
        states = states if states is not None else [c for c in frame.columns if c not in group]
        distinct = frame[group + states].drop_duplicates()
        conflicted = distinct.loc[distinct.duplicated(group, keep=False), group].drop_duplicates()
        if conflicted.empty:
            return frame
        bad = pd.MultiIndex.from_frame(frame[group]).isin(pd.MultiIndex.from_frame(conflicted))
        examples = _examples(conflicted[keys[0]] if len(keys) == 1 else conflicted[keys].apply(tuple, axis=1))
        return self.split(frame, pd.Series(bad, index=frame.index), reason, key=keys, within=within, states=states, examples=examples)

    def read_csv(self, source: Any, file: str | Path, reason: str = MALFORMED_LINE, **options: Any) -> pd.DataFrame:
        """A landed CSV file, its well-formed lines as a frame; a line with more fields than the header
        is quarantined (its fields kept, as a JSON list) instead of failing the whole file.

        Read once (``source``: a stream, or a callable returning one), parsed with pandas' fast
        parser; only a file that has such a line is parsed again with the tolerant one."""
        import io

        text = _text(source)
        try:
            return pd.read_csv(io.StringIO(text), **options)
        except pd.errors.ParserError:
            bad: list[list[str]] = []
            frame = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=lambda fields: bad.append(fields) or None, **options)
            rows = pd.DataFrame({"fields": [json.dumps(f) for f in bad]})
            self.reject(rows, reason, file=Path(file).name, expected_fields=len(frame.columns), examples=_examples(rows["fields"]))
            return frame

    def read_jsonl(self, source: Any, file: str | Path, reason: str = MALFORMED_LINE, **options: Any) -> pd.DataFrame:
        """A landed JSON-lines file, its valid lines as a frame; a line that is not a JSON object is
        quarantined (as text) instead of failing the whole file."""
        import io

        text = _text(source)
        try:
            return pd.read_json(io.StringIO(text), lines=True, **options)
        except ValueError:
            good, bad = json_lines(text)
            rows = pd.DataFrame({"line": bad})
            self.reject(rows, reason, file=Path(file).name, examples=_examples(rows["line"]))
            return pd.read_json(io.StringIO("\n".join(json.dumps(g) for g in good)), lines=True, **options) if good else pd.DataFrame()

    def unparseable(self, frame: pd.DataFrame, columns: Mapping[str, str], reason: str = UNPARSEABLE_VALUE, convert: bool = True) -> pd.DataFrame:
        """Rows where a value of ``columns`` ({column: "datetime" | "date" | "number"}) is present but
        cannot be read as that type (``2026-13-45``, ``twelve``) are quarantined; the rest come back
        with those columns converted (``convert=False``: as they were, e.g. dates kept as exported
        text). A missing value stays missing: the contract judges nulls."""
        converted: dict[str, pd.Series] = {}
        bad = pd.Series(False, index=frame.index)
        failed: dict[str, list] = {}
        for column, kind in columns.items():
            values = frame[column]
            if kind in ("datetime", "date"):
                parsed = pd.to_datetime(values, errors="coerce", format="mixed")
            elif kind == "number":
                parsed = pd.to_numeric(values, errors="coerce")
            else:
                raise ValueError(f"unparseable(): {column!r} has kind {kind!r}; expected datetime, date or number")
            wrong = parsed.isna() & values.notna() & (values.astype("str").str.strip() != "")
            if wrong.any():
                failed[column] = _examples(values[wrong])
            bad |= wrong
            converted[column] = parsed.dt.date if kind == "date" else parsed
        kept = self.split(frame, bad, reason, columns={c: k for c, k in columns.items()}, examples=failed) if bad.any() else frame
        return kept.assign(**{c: v.loc[kept.index] for c, v in converted.items()}) if convert else kept

    def screened(self, data: Any) -> "Screened":
        return Screened(data, self)


def _plain(value: Any) -> Any:
    """A JSON-friendly value (a composite key as a list, numpy scalars as Python, missing as None)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _is_in(values: pd.Series, known: Iterable) -> np.ndarray:
    """``values.isin(known)`` through Arrow's hash kernel.

    pandas' ``isin`` on Arrow-backed strings builds one Python scalar per known value: 11 s for a
    day's claims against 1.5M policy ids, where ``pyarrow.compute.is_in`` takes milliseconds. Values
    Arrow cannot type alike (mixed objects) fall back to pandas.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    known_values = known if isinstance(known, (pd.Series, pd.Index)) else pd.Index(list(known))
    try:
        array = pa.array(values, from_pandas=True)
        value_set = pa.array(known_values, from_pandas=True)
        if value_set.type != array.type:
            value_set = value_set.cast(array.type)
        return pc.is_in(array, value_set=value_set, skip_nulls=True).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values.isin(known_values).to_numpy()


def _text(source: Any) -> str:
    """A landed file's text: ``source`` is a stream or a callable returning one."""
    raw = (source() if callable(source) else source).read()
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def json_lines(text: str) -> tuple[list[dict], list[str]]:
    """The JSON objects of a JSON-lines text, and the lines that are not one (blank lines skipped)."""
    good, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            good.append(value)
        else:
            bad.append(line)
    return good, bad


def _examples(values: pd.Series) -> list:
    return [_plain(v) for v in values.drop_duplicates().head(EXAMPLES)]


@dataclass(frozen=True)
class Screened:
    """What a transform returns when it rejected rows: the data to publish plus the rejections.

    ``rejected`` is a :class:`Rejects` or a mapping ``{reason: frame}``.
    """

    data: Any
    rejected: Rejects | Mapping[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def rejections(self) -> list[Rejection]:
        if isinstance(self.rejected, Rejects):
            return list(self.rejected.rejections)
        if isinstance(self.rejected, Mapping):
            return [Rejection(reason, rows) for reason, rows in self.rejected.items() if len(rows)]
        raise TypeError(f"Screened.rejected must be a Rejects or a {{reason: DataFrame}} mapping, got {type(self.rejected).__name__}")


@dataclass(frozen=True)
class Held:
    """What one step put in the quarantine: counts per reason, where, and the details."""

    asset: dg.AssetKey
    counts: dict[str, int]
    uri: str | None
    details: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _arrow(frame: pd.DataFrame):
    """The rejected rows as an Arrow table; a column Arrow cannot type is kept as text, never lost."""
    import pyarrow as pa

    frame = frame.reset_index(drop=True)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        mixed = {c: frame[c].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)) for c in frame.columns if frame[c].dtype == object}
        return pa.Table.from_pandas(frame.assign(**mixed), preserve_index=False)


def redact_contact_details_in(frame: pd.DataFrame) -> pd.DataFrame:
    """Every text value of ``frame`` holding an email address or a phone number, with those redacted.

    Rejected rows come straight from a source, before any of the domain's own redaction, so the
    platform redacts contact details in every text column before they are stored (the detector of
    :mod:`mesh_platform.products.private`); the rest of a value (a reference, a file name) stays for whoever
    fixes the row. Names cannot be found without knowing the person: a domain whose rejects may
    hold free text redacts or withholds it before it hands the rows over (customer_care does).
    """
    from mesh_platform.foundations.text import holds_contact_details, redact_contact_details

    redacted = {}
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        text = values.map(lambda v: v if isinstance(v, str) else None)
        flagged = holds_contact_details(text)
        if flagged.any():
            redacted[column] = values.where(~flagged, redact_contact_details(text.where(flagged)))
    return frame.assign(**redacted) if redacted else frame


def store(lake: Lake, key: dg.AssetKey, run_id: str, rejections: list[Rejection]) -> Held:
    """Write one step's rejections to the owning domain's quarantine (one folder per run)."""
    domain, asset = key.path[0], key.path[-1]
    by_reason: dict[str, list[Rejection]] = {}
    for r in rejections:
        by_reason.setdefault(r.reason, []).append(r)
    counts = {reason: sum(len(r.rows) for r in group) for reason, group in sorted(by_reason.items())}
    details = [{"reason": r.reason, "rows": len(r.rows), **r.detail} for r in rejections]
    if not rejections:
        return Held(key, {}, None, [])
    for reason, group in by_reason.items():
        frame = pd.concat(
            [r.rows.assign(_reason=reason, _detail=json.dumps(r.detail, default=str, sort_keys=True)) for r in group],
            ignore_index=True,
        )
        frame = redact_contact_details_in(frame)
        lake.write_table(Lake.quarantine_path(domain, asset, run_id, f"{reason}.parquet"), _arrow(frame))
    summary = {
        "asset": key.to_user_string(),
        "run_id": run_id,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "counts": counts,
        "rejections": details,
    }
    lake.write_bytes(Lake.quarantine_path(domain, asset, run_id, SUMMARY), json.dumps(summary, indent=2, default=str).encode())
    return Held(key, counts, lake.uri(Lake.quarantine_path(domain, asset, run_id)), details)


def history(lake: Lake, domain: str, asset: str | None = None) -> list[dict]:
    """Every run's quarantine summary of a domain (or one of its assets), oldest first."""
    from mesh_platform.storage.lake import QUARANTINE

    assets = [asset] if asset else lake.list(f"{domain}/{QUARANTINE}")
    found = []
    for name in assets:
        for run in lake.list(f"{domain}/{QUARANTINE}/{name}"):
            path = Lake.quarantine_path(domain, name, run, SUMMARY)
            if lake.exists(path):
                summary = json.loads(lake.read_bytes(path))
                summary["uri"] = lake.uri(Lake.quarantine_path(domain, name, run))
                found.append(summary)
    return sorted(found, key=lambda s: s["time"])


def audit_event(held: Held, product: str) -> dg.AssetObservation:
    """The audit record of a quarantine: read back by ``audit_records`` / ``mesh audit`` as kind ``quarantine``."""
    from mesh_platform.governance.audit import AUDIT

    return dg.AssetObservation(
        asset_key=held.asset,
        description=f"{held.total} row(s) quarantined: " + ", ".join(f"{r}={n}" for r, n in held.counts.items()),
        metadata={
            AUDIT: "quarantine",
            md.PRODUCT: product,
            md.PORT: held.uri or "",
            md.ROWS: held.total,
            md.REASONS: dg.MetadataValue.json(held.counts),
            md.DETAILS: dg.MetadataValue.json(held.details),
        },
    )


def output_metadata(held: Held, scope: str) -> dict:
    meta: dict[str, Any] = {COUNTS: dg.MetadataValue.json(held.counts), TOTAL: held.total, SCOPE: scope}
    if held.uri:
        meta[LOCATION] = dg.MetadataValue.url(held.uri)
    return meta


def carried(instance: dg.DagsterInstance, upstream: Iterable[dg.AssetKey]) -> dict[str, dict[str, int]]:
    """Counts rejected by private intermediates at their last materialization, per intermediate."""
    from mesh_platform.storage.versions import latest_materialization

    out: dict[str, dict[str, int]] = {}
    for key in upstream:
        event = latest_materialization(instance, key)
        mat = event.asset_materialization if event is not None else None
        if mat is None or SCOPE not in mat.metadata or mat.metadata[SCOPE].value != "intermediate":
            continue
        counts = {k: int(v) for k, v in (mat.metadata[COUNTS].value or {}).items() if int(v)}
        if counts:
            out[key.to_user_string()] = counts
    return out


# -- the product's asset check ------------------------------------------------------------------


class QuarantineLimitExceeded(Exception):
    def __init__(self, product: str, message: str):
        self.product = product
        super().__init__(f"{product} {message}; nothing was published, the last good version stays")


def check_spec(key: dg.AssetKey, contract: Contract) -> dg.AssetCheckSpec:
    limits = contract.quarantine_limits
    fail = f", fails above {limits.fail_above:.2%} (blocks publish)" if limits.fail_above is not None else ""
    return dg.AssetCheckSpec(
        CHECK,
        asset=key,
        blocking=limits.fail_above is not None,
        description=f"Share of source rows quarantined on the way to this product: passes at zero, warns above {limits.warn_above:.2%}{fail} (customProperties[quarantine]).",
        metadata={md.CONTRACT_FIELD: "customProperties[quarantine]"},
    )


@dataclass(frozen=True)
class Verdict:
    result: dg.AssetCheckResult
    failed: bool
    message: str
    counts: dict[str, int]


def judge(product: str, limits: QuarantineLimits, published: int, own: Held, upstream: dict[str, dict[str, int]]) -> Verdict:
    """The ``quarantine`` check: share = quarantined / (published + quarantined)."""
    counts: dict[str, int] = dict(own.counts)
    for by_reason in upstream.values():
        for reason, n in by_reason.items():
            counts[reason] = counts.get(reason, 0) + n
    total = sum(counts.values())
    share = total / (published + total) if total else 0.0
    failed = limits.fail_above is not None and share > limits.fail_above
    warned = not failed and total > 0 and share > limits.warn_above
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(counts.items()))
    if failed:
        message = f"quarantined {total} of {published + total} rows ({share:.2%}), above failAbove {limits.fail_above:.2%} ({reasons})"
    elif warned:
        message = f"quarantined {total} of {published + total} rows ({share:.2%}), above warnAbove {limits.warn_above:.2%} ({reasons})"
    else:
        message = f"quarantined {total} of {published + total} rows ({share:.2%})"
    metadata: dict[str, Any] = {
        "quarantined_rows": total,
        "published_rows": published,
        "quarantined_share": round(share, 6),
        "by_reason": dg.MetadataValue.json(dict(sorted(counts.items()))),
        "warn_above": limits.warn_above,
        "contract_field": "customProperties[quarantine]",
    }
    if limits.fail_above is not None:
        metadata["fail_above"] = limits.fail_above
    if upstream:
        metadata["carried_from"] = dg.MetadataValue.json(upstream)
    if own.uri:
        metadata["quarantine"] = dg.MetadataValue.url(own.uri)
    result = dg.AssetCheckResult(
        check_name=CHECK,
        passed=not (failed or warned),
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=message,
    )
    return Verdict(result, failed, message, counts)


def rows_of(data: Any) -> int:
    if hasattr(data, "num_rows"):
        return int(data.num_rows)
    return len(data)


__all__ = [
    "CHECK",
    "CONFLICTING_STATES",
    "Held",
    "QuarantineLimitExceeded",
    "Rejection",
    "Rejects",
    "Screened",
    "UNEXPECTED_COLUMNS",
    "UNRESOLVED_REFERENCE",
    "audit_event",
    "carried",
    "check_spec",
    "history",
    "judge",
    "store",
]
