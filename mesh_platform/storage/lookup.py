"""An input port read by key: what a step gets for ``InputPort(..., lookup="<column>")``.

A product that joins a few rows of its own to a large product of another domain (a day's 6,000
claims to a book of 1.5M policies) needs the rows its keys name, not the table. Read whole, the
join costs reading, converting and filtering the whole table on every run; read by key, the filter
runs inside the scan and only the matching rows reach pandas (at 1.5M policies, 0.10 s instead
of 0.16-0.19 s in a warm process: docs/ports.md, "Lookups").

A partitioned consumer reading another port over a window of days (fraud's features: the claims
of the year before each day) reads its own days with :meth:`Lookup.on_run_days`, then the window
by a key of those rows: a day's claims, then their policyholders' claims of the year, instead of
the year's 550k claims read and filtered in pandas.

The step asks :meth:`Lookup.rows`; each call is a read through the governed path, like a whole
read: the consumer's grant decides the columns and masking at the call, the version is the one
the run pins (the producer's latest publish, or a replayed run's), the days are the run's window,
and the read is audited with the rows it returned and how many keys it asked for
(``mesh/lookup``). A key of a masked column is looked up among the masked values, as the consumer
sees them. A lookup the step never calls reads nothing and records no read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd


class Lookup:
    """Rows of an input port by key (``lookup.rows(keys)``), and a windowed port's rows on the
    step's own days (``lookup.on_run_days(context)``); see the module docstring."""

    def __init__(self, product: str, column: str, read: Callable[[list], pd.DataFrame],
                 read_days: Callable[[tuple[str, str] | None], pd.DataFrame] | None = None):
        self.product = product
        self.column = column
        self._read = read
        self._read_days = read_days

    def rows(self, keys: Iterable) -> pd.DataFrame:
        """The rows whose ``column`` is one of ``keys`` (a Series, list, array ...; nulls and
        repeats are ignored), with the columns the port reads, in the port's order."""
        values = pd.Series(keys) if not isinstance(keys, pd.Series) else keys
        wanted = values.dropna().drop_duplicates().tolist()
        return self._read(wanted)

    def on_run_days(self, context) -> pd.DataFrame:
        """Every row on the days the step materializes, with the columns the port reads (every row
        of the window when the step is not partitioned).

        For a port read over a window of days by key: the step's own days first, then ``rows`` of
        the window by a key those rows carry. fraud's features of a new day read that day's
        claims, then the year's claims of their policyholders, instead of the whole year. A read
        of its own, audited like ``rows``."""
        from mesh_platform.products.partitions import run_keys

        if self._read_days is None:
            raise TypeError(f"{self!r}: the rows of the run's days can only be read inside a step")
        keys = run_keys(context)
        # a run's days are one range (one day, or a backfill's range run)
        return self._read_days((min(keys), max(keys)) if keys else None)

    def __repr__(self) -> str:
        return f"Lookup({self.product!r} by {self.column!r})"
