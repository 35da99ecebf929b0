"""The in-memory DuckDB database the platform's own queries over Arrow tables run in.

Quality rules, the primary key's uniqueness and a contract's conformance checks each query an
Arrow table the step holds (registered, not copied). Each used to open a DuckDB database of its
own: 10-20 ms a database (DuckDB builds its catalog of functions every time), three of them per
product published, about 0.4 s of the three runs of a new day of claims. A connection to a
database that is already open costs well under a millisecond, and a registered table is visible
to its connection only, so queries in different threads never see each other's tables.

One database per process and per ``threads`` setting (DuckDB sets threads per database), opened on
first use: a process forked from one that had opened it gets its own (a DuckDB database does not
survive a fork; the inherited one is left untouched). The database reaches nothing outside the
process (no files, no extension downloads) and its configuration is locked: a contract's SQL rule
cannot read a file, nor change a setting for the queries after it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_DATABASES: dict[tuple[int, int | None], Any] = {}
_LOCK = threading.Lock()


def connect(threads: int | None = None):
    """A new connection to this process's scratch database (``threads``: DuckDB's, default every
    core); close it when done (``with connect() as con:``)."""
    import duckdb

    key = (os.getpid(), threads)
    with _LOCK:
        database = _DATABASES.get(key)
        if database is None:
            config = {"enable_external_access": False, "autoinstall_known_extensions": False, "lock_configuration": True}
            if threads:
                config["threads"] = threads
            database = _DATABASES[key] = duckdb.connect(config=config)
    return database.cursor()
