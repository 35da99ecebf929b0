"""An input port read by key: what a step gets for ``InputPort(..., lookup="<column>")``.

A product that joins a few rows of its own to a large product of another domain (a day's 6,000
claims to a book of 1.5M policies) needs the rows its keys name, not the table. Read whole, the
join costs reading, converting and filtering the whole table on every run; read by key, the filter
runs inside the scan and only the matching rows reach pandas (at 1.5M policies, 0.10 s instead
of 0.16-0.19 s in a warm process: docs/ports.md, "Lookups").

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
    """Rows of an input port by key (``lookup.rows(keys)``); see the module docstring."""

    def __init__(self, product: str, column: str, read: Callable[[list], pd.DataFrame]):
        self.product = product
        self.column = column
        self._read = read

    def rows(self, keys: Iterable) -> pd.DataFrame:
        """The rows whose ``column`` is one of ``keys`` (a Series, list, array ...; nulls and
        repeats are ignored), with the columns the port reads, in the port's order."""
        values = pd.Series(keys) if not isinstance(keys, pd.Series) else keys
        wanted = values.dropna().drop_duplicates().tolist()
        return self._read(wanted)

    def __repr__(self) -> str:
        return f"Lookup({self.product!r} by {self.column!r})"
