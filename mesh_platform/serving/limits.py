"""What one consumer may take from ``mesh serve``: its quotas, enforced per response and per request.

From the consumer domain's quotas (``domain.yaml`` within ``quotas.yaml``'s ceilings,
:mod:`mesh_platform.governance.quotas`): ``serve_rows_per_response`` and ``serve_bytes_per_response`` stop a
response at the limit with a clear error (counted while it streams: nothing is held to count it),
``serve_concurrent_requests`` refuses requests beyond it at once, ``serve_query_seconds`` cancels a
query that runs longer.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from mesh_platform.governance.quotas import BUILT_IN_DEFAULTS, for_domain


class LimitExceeded(Exception):
    """A request over one of the caller's serving quotas; the message names the quota and its value."""


@dataclass(frozen=True)
class ServeQuota:
    rows: int
    bytes: int
    concurrent: int
    seconds: float


class Limits:
    def __init__(self, domains_root: Path):
        self.domains_root = Path(domains_root)
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def quota(self, domain: str) -> ServeQuota:
        quotas = for_domain(domain, self.domains_root / domain)

        def get(key):
            value = quotas.get(key)
            return BUILT_IN_DEFAULTS[key] if value is None else value

        return ServeQuota(int(get("serve_rows_per_response")), int(get("serve_bytes_per_response")),
                          int(get("serve_concurrent_requests")), float(get("serve_query_seconds")))

    @contextmanager
    def slot(self, domain: str, quota: ServeQuota) -> Iterator[None]:
        """One of the domain's concurrent requests, or :class:`LimitExceeded` at once (never a queue)."""
        with self._lock:
            running = self._running.get(domain, 0)
            if running >= quota.concurrent:
                raise LimitExceeded(
                    f"domain {domain!r} already has {running} request(s) running: its quota serve_concurrent_requests "
                    f"is {quota.concurrent} (domains/{domain}/domain.yaml); retry when one ends"
                )
            self._running[domain] = running + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[domain] -= 1


class Counter:
    """Counts what a response streamed; stops it at the caller's row and byte quotas."""

    def __init__(self, quota: ServeQuota, domain: str):
        self.quota, self.domain = quota, domain
        self.rows = 0
        self.bytes = 0

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            self.rows += batch.num_rows
            self.bytes += batch.nbytes
            if self.rows > self.quota.rows:
                raise LimitExceeded(
                    f"the response exceeds {self.quota.rows} rows, the quota serve_rows_per_response of domain "
                    f"{self.domain!r}: select fewer rows or columns (a filter, LIMIT, an aggregate)"
                )
            if self.bytes > self.quota.bytes:
                raise LimitExceeded(
                    f"the response exceeds {self.quota.bytes} bytes, the quota serve_bytes_per_response of domain "
                    f"{self.domain!r}: select fewer rows or columns"
                )
            yield batch


__all__ = ["Counter", "LimitExceeded", "Limits", "ServeQuota"]
