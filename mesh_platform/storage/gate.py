"""A commit gate: a check that runs while a publish writes its data files; only the commit waits.

The costliest guarantee of a publish is the primary key's uniqueness (a hash aggregation over every
key). It does not need to finish before the Delta write starts, only before the commit makes the
new version visible. :class:`CommitGate` runs the check in a thread (DuckDB and pyarrow compute
release the GIL, so it takes the second core) and :meth:`CommitGate.stream` hands delta-rs the table
as a ``pyarrow.RecordBatchReader`` whose end waits for the check: the data files are encoded (and,
past delta-rs's target file size, written) while the check runs, and the stream ends, which lets
delta-rs commit, only when the check passed. When it fails the stream ends with its error instead, delta-rs aborts the write before its
commit (the table stays at its last good version; the files already written are named by no
commit and :func:`mesh_platform.storage.delta.vacuum` removes them), and
:func:`mesh_platform.storage.delta.write` raises the check's own exception.

``benchmarks/io_roundtrip.py`` measures what the overlap saves (``docs/io.md``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pyarrow as pa

# below this many rows a publish checks its key before the write, as before: a second DuckDB
# connection in a thread costs more (~30-50 ms, measured at 20k rows) than the overlap saves
OVERLAP_MIN_ROWS = 100_000


def worth_overlapping(rows: int) -> bool:
    """Whether a table this long has its key check overlap the write (:data:`OVERLAP_MIN_ROWS`)."""
    return rows >= OVERLAP_MIN_ROWS


# rows per batch handed to delta-rs: small enough that encoding keeps pace with the stream (so the
# wait at its end hides behind the write), large enough not to cost per-batch overhead
BATCH_ROWS = 131_072


class CommitGate:
    """``check`` runs in a thread from construction; :meth:`wait` returns its result or raises its error.

    ``then`` (optional) runs once, in the thread that first waits, on the check's result: what must
    happen before the commit but needs the whole result (a quality report). Its exception, like the
    check's, fails the gate.
    """

    def __init__(self, check: Callable[[], Any], name: str = "check", then: Callable[[Any], Any] | None = None):
        self.name = name
        self._check = check
        self._then = then
        self._result: Any = None
        self._error: BaseException | None = None
        self._finished = False
        self._lock = threading.Lock()
        self.waited = threading.Event()  # set once someone waits: for a publish, every batch was handed over
        self._thread = threading.Thread(target=self._run, name=f"mesh-commit-gate-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._check()
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait(), in the publishing thread
            self._error = exc

    def wait(self) -> Any:
        """Block until the check is done; its result, or its exception raised again."""
        self.waited.set()
        self._thread.join()
        with self._lock:
            if not self._finished:
                self._finished = True
                if self._error is None and self._then is not None:
                    try:
                        self._result = self._then(self._result)
                    except BaseException as exc:  # noqa: BLE001
                        self._error = exc
        if self._error is not None:
            raise self._error
        return self._result

    def check_result(self) -> Any:
        """The check's own result (``then`` not run), waited for; its exception raised again."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    @property
    def error(self) -> BaseException | None:
        """The check's exception once it failed (None while it runs, or when it passed)."""
        return self._error if self._finished else None

    def stream(self, table: pa.Table, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        """``table`` as a stream whose end waits for the check (and fails with it)."""

        def batches():
            yield from table.to_batches(max_chunksize=batch_rows)
            self.wait()  # the end of the stream, hence the commit, waits for the check

        return pa.RecordBatchReader.from_batches(table.schema, batches())
