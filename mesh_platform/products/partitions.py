"""Daily partitions of a product, declared by its contract.

A contract partitions its table by marking one ``date`` or ``timestamp`` column (ODCS
``partitioned: true``, ``partitionKeyPosition: 1``) and saying where the partitions start::

    customProperties:
      - property: partitioning
        value: {granularity: daily, start: "2024-01-01"}

Each day is one partition; a row belongs to the day of its partition column (UTC, no time zone
conversion). The product's Dagster asset gets a :class:`dagster.DailyPartitionsDefinition` from
that (``end_offset=1``: today is a partition, since batches land during the day) and a single-run
backfill policy, so a range of days is materialized by one run (``mesh materialize --from/--to``).

**How a partition is published** (:func:`mesh_platform.storage.publishing.publish`): the rows of a run
must all fall in the run's days (:func:`check_rows`, else nothing is written), and the port's Delta
table is overwritten *where the partition column is in those days* (:func:`predicate`), in one
commit: the rest of the table is untouched, and readers see the whole new day or the old one.
The table is not physically (Hive-)partitioned by day: a product of thousands of rows a day would
otherwise become thousands of tiny files, each read separately (on this machine a 6,000-row table
over 900 days read in 1.27 s instead of 0.015 s). Each publish writes its own files, so files stay
clustered by day and the column statistics let readers and overwrites skip the others. The
quality rules and contract checks of a run see that run's days; primary-key uniqueness is
checked across the whole table (the keys of the new rows against the keys the table keeps outside
the days being replaced, before the commit; see :func:`mesh_platform.storage.publishing.publish`).

**How a partition is read**: a partitioned consumer reads the days its partition mapping maps to
(:class:`Window`, or every day with :data:`ALL`); an unpartitioned consumer reads the whole table.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Iterable

PROPERTY = "partitioning"
GRANULARITIES = ("daily",)
KEY_FORMAT = "%Y-%m-%d"


class PartitionError(ValueError):
    """A run's rows or partition keys do not fit the product's partitions; nothing was published."""


@dataclass(frozen=True)
class Partitioning:
    """A contract's daily partitioning: the column that says a row's day, and the first day."""

    column: str
    start: str  # YYYY-MM-DD
    logical_type: str  # date or timestamp

    @property
    def definition(self):
        return daily_definition(self.start)

    def describe(self) -> str:
        return f"daily by {self.column}, from {self.start}"


@functools.cache
def daily_definition(start: str):
    """One definition object per start day (shared by every asset that starts there)."""
    import dagster as dg

    return dg.DailyPartitionsDefinition(start_date=start, end_offset=1)


@dataclass(frozen=True)
class Window:
    """A partitioned consumer reads, for its day D, the producer's days D-``before`` .. D+``after``."""

    before: int = 0
    after: int = 0

    def mapping(self):
        import warnings

        import dagster as dg

        # days before the producer's first day (a window at the start of history) simply do not exist
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.TimeWindowPartitionMapping(start_offset=-self.before, end_offset=self.after, allow_nonexistent_upstream_partitions=True)


class _All:
    """A partitioned consumer reads every day of the producer for each of its own days."""

    def mapping(self):
        import dagster as dg

        return dg.AllPartitionMapping()

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()


def _as_day(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.strftime(KEY_FORMAT)
    if isinstance(value, str):
        try:
            return dt.datetime.strptime(value, KEY_FORMAT).strftime(KEY_FORMAT)
        except ValueError:
            return None
    return None


def partitioning_problems(contract) -> list[tuple[str, str]]:
    """Problems with a contract's partitioning, as (field path, message) pairs (checked at load)."""
    table = contract.table
    marked = [c for c in table.properties if c.partitioned]
    raw = contract.custom(PROPERTY)
    where = f"customProperties[{PROPERTY}].value"
    problems: list[tuple[str, str]] = []
    if not marked:
        if raw is not None:
            problems.append((where, f"a {PROPERTY} is given but no column of schema[{table.name}] is partitioned: true"))
        return problems
    if len(marked) > 1:
        names = ", ".join(c.name for c in marked)
        problems.append((f"schema[{table.name}].properties[{marked[1].name}].partitioned", f"a product is partitioned by one column; {names} are all partitioned"))
        return problems
    col = marked[0]
    if col.logical_type not in ("date", "timestamp"):
        problems.append((f"schema[{table.name}].properties[{col.name}].logicalType", f"a partition column must be a date or timestamp (its day is the partition), got {col.logical_type!r}"))
    if col.partition_key_position not in (-1, 1):
        problems.append((f"schema[{table.name}].properties[{col.name}].partitionKeyPosition", f"only one partition key is supported: position 1, got {col.partition_key_position}"))
    if not (col.required or col.primary_key):
        problems.append((f"schema[{table.name}].properties[{col.name}].required", "a partition column must be required: a row without a day belongs to no partition"))
    if not isinstance(raw, dict):
        problems.append((where, f"a partitioned product says where its partitions start: {{granularity: daily, start: \"2024-01-01\"}}, got {raw!r}"))
        return problems
    for key in raw:
        if key not in ("granularity", "start"):
            problems.append((f"{where}.{key}", "unknown partitioning setting (expected granularity and start)"))
    if raw.get("granularity", "daily") not in GRANULARITIES:
        problems.append((f"{where}.granularity", f"only daily partitions are supported, got {raw.get('granularity')!r}"))
    if _as_day(raw.get("start")) is None:
        problems.append((f"{where}.start", f"the first day of the partitions, as YYYY-MM-DD, got {raw.get('start')!r}"))
    return problems


def of(contract) -> Partitioning | None:
    """The contract's partitioning, or None (contracts with a malformed one do not load)."""
    if contract is None or contract.custom(PROPERTY) is None:
        return None
    col = next((c for c in contract.table.properties if c.partitioned), None)
    if col is None:
        return None
    return Partitioning(col.name, _as_day(contract.custom(PROPERTY)["start"]), col.logical_type)


def day(key: str) -> dt.date:
    return dt.datetime.strptime(key, KEY_FORMAT).date()


def ranges(keys: Iterable[str], gap: int = 0) -> list[tuple[str, str]]:
    """Consecutive days as (first, last) pairs, in order; ``gap``: also join ranges at most that
    many days apart (one run re-publishing a few days in between instead of several runs)."""
    days = sorted({day(k) for k in keys})
    out: list[list[dt.date]] = []
    for d in days:
        if out and d - out[-1][1] <= dt.timedelta(days=1 + gap):
            out[-1][1] = d
        else:
            out.append([d, d])
    return [(a.strftime(KEY_FORMAT), b.strftime(KEY_FORMAT)) for a, b in out]


def describe_keys(keys: Iterable[str]) -> str:
    return ", ".join(a if a == b else f"{a}..{b}" for a, b in ranges(keys))


def keys_described(text: str) -> set[str]:
    """The days :func:`describe_keys` wrote (``2026-06-01..2026-06-03, 2026-06-09``)."""
    found: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("..")
        start, end = day(first), day(last or first)
        found.update((start + dt.timedelta(days=i)).strftime(KEY_FORMAT) for i in range((end - start).days + 1))
    return found


def predicate(partitioning: Partitioning, keys: Iterable[str]) -> str:
    """The SQL predicate (delta-rs) selecting the rows of ``keys``: half-open ranges of days."""
    col = f'"{partitioning.column}"'
    parts = []
    for first, last in ranges(keys):
        end = (day(last) + dt.timedelta(days=1)).strftime(KEY_FORMAT)
        if partitioning.logical_type == "date":
            parts.append(f"({col} >= '{first}' AND {col} < '{end}')")
        else:
            parts.append(f"({col} >= '{first}T00:00:00' AND {col} < '{end}T00:00:00')")
    return " OR ".join(parts)


def on_days(column, keys: Iterable[str]) -> "Any":
    """Whether each value of a pyarrow date/timestamp column falls on one of the days ``keys``
    (False for a null): range comparisons per run of consecutive days, not a formatted key per row,
    so that a check over a whole table's rows stays cheap."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = column.cast(pa.timestamp(column.type.unit))
    mask = pa.nulls(len(column), pa.bool_())
    for first, last in ranges(keys):
        start, end = day(first), day(last) + dt.timedelta(days=1)
        if pa.types.is_timestamp(column.type):
            low, high = (pa.scalar(dt.datetime.combine(d, dt.time()), column.type) for d in (start, end))
        else:
            low, high = (pa.scalar(d, column.type) for d in (start, end))
        mask = pc.or_kleene(mask, pc.and_(pc.greater_equal(column, low), pc.less(column, high)))
    return mask.fill_null(False)


def check_rows(table, partitioning: Partitioning, keys: list[str], port: str) -> None:
    """Every row of ``table`` must fall in one of the run's days ``keys``; else nothing is published."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return
    column = table[partitioning.column]
    if column.null_count:
        raise PartitionError(f"port {port}: {column.null_count} row(s) have no {partitioning.column}, so they belong to no partition; nothing was published")
    outside = pc.invert(on_days(column, keys))
    count = pc.sum(outside).as_py() or 0
    if count:
        found = sorted({value.strftime(KEY_FORMAT) for value in pc.filter(column, outside).to_pylist()})
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise PartitionError(
            f"port {port}, partition {describe_keys(keys)}: {count} row(s) have a {partitioning.column} outside the partition "
            f"(days {shown}); a run publishes only the days it was asked for. Nothing was published"
        )


def check_keys(definition, keys: Iterable[str], what: str) -> None:
    """Every key must be a partition of ``definition`` (today's included); names what has which."""
    keys = list(dict.fromkeys(keys))
    known = definition.get_partition_keys()
    first, last = (known[0], known[-1]) if known else ("-", "-")
    valid = set(known)
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise PartitionError(
            f"{what}: partition {', '.join(unknown[:5])} is not a partition of it (daily partitions from {first} to {last}, as YYYY-MM-DD)"
        )


def range_tags(definition, first: str | None = None, last: str | None = None) -> dict[str, str]:
    """Run tags that materialize days ``first``..``last`` (every day by default) in one run."""
    return {
        "dagster/asset_partition_range_start": first or definition.get_first_partition_key(),
        "dagster/asset_partition_range_end": last or definition.get_last_partition_key(),
    }


def run_keys(context) -> list[str] | None:
    """The partition keys a step materializes, or None when it is not partitioned."""
    if not getattr(context, "has_partition_key", False) and not getattr(context, "has_partition_key_range", False):
        return None
    return list(context.partition_keys)


def on_run_days(context, frame, column: str):
    """The rows of ``frame`` on the days the step materializes (every row when it is unpartitioned):
    what a partitioned product that reads more than its own days (a window) returns."""
    keys = run_keys(context)
    return frame if keys is None else within(frame, column, keys)


def within(frame, column: str, keys: Iterable[str]):
    """The rows of a pandas frame whose ``column`` falls on one of ``keys`` (a day's landed rows)."""
    import pandas as pd

    values = pd.to_datetime(frame[column])
    if getattr(values.dt, "tz", None) is not None:  # the day on the values' own clock, as the landing sensor reads it
        values = values.dt.tz_localize(None)
    mask = pd.Series(False, index=frame.index)
    for first, last in ranges(keys):
        mask |= (values >= pd.Timestamp(day(first))) & (values < pd.Timestamp(day(last) + dt.timedelta(days=1)))
    return frame[mask]


__all__ = [
    "ALL", "PROPERTY", "PartitionError", "Partitioning", "Window", "check_keys", "check_rows", "daily_definition", "day",
    "describe_keys", "on_days", "of", "on_run_days", "partitioning_problems", "predicate", "range_tags", "ranges", "run_keys", "within",
]
