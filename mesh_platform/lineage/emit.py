"""Sending a run's OpenLineage events: through ``openlineage-python``'s client and a configurable transport.

Where the events go, first match wins:

1. OpenLineage's own configuration, when any is given: ``OPENLINEAGE_CONFIG`` (an
   ``openlineage.yml``), ``OPENLINEAGE__TRANSPORT__*`` variables, or ``OPENLINEAGE_URL`` (HTTP to
   a lineage server such as Marquez: ``OPENLINEAGE_URL=http://marquez:5000``). This is the
   production setting; every transport of the client (http, kafka, file, composite, ...) works.
2. ``MESH_LINEAGE_FILE``: a JSON-lines file, one event per line, appended to.
3. The default: ``lineage/events.jsonl`` in the mesh's home, from the settings the caller passes
   (the run's code location's, for its sensors and ``mesh materialize``; the command's, for
   ``mesh lineage emit``).

``OPENLINEAGE_DISABLED=true`` (or ``MESH_LINEAGE=off``) sends nothing. Several processes (run
workers, code servers running the lineage sensors, ``mesh materialize``) may append to one file: each
event is written under an exclusive lock, so lines never interleave.

Lineage never fails a run: an event that cannot be sent is reported (a warning in the run's
sensor log or in ``mesh materialize``'s output) and the run's outcome stays what it was.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from mesh_platform.foundations.settings import MeshSettings


def disabled() -> bool:
    return os.environ.get("MESH_LINEAGE", "on").lower() in ("off", "0", "false", "no") or \
        os.environ.get("OPENLINEAGE_DISABLED", "").lower().strip() == "true"


def _openlineage_configured() -> bool:
    return bool(os.environ.get("OPENLINEAGE_CONFIG") or os.environ.get("OPENLINEAGE_URL")) or any(
        k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ
    )


def events_file(home: str | Path) -> Path | None:
    """The JSON-lines file events are appended to, or ``None`` when OpenLineage's own configuration
    decides; by default in the mesh ``home``."""
    if _openlineage_configured():
        return None
    if os.environ.get("MESH_LINEAGE_FILE"):
        return Path(os.environ["MESH_LINEAGE_FILE"]).resolve()
    return Path(home) / "lineage" / "events.jsonl"


def client(home: str | Path):
    """An ``OpenLineageClient`` with the transport chosen as described above."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport

    path = events_file(home)
    if path is None:
        return OpenLineageClient()
    path.parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))


@contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def emit_run(instance, run_id: str, settings: "MeshSettings") -> list:
    """Build and send the OpenLineage events of one Dagster run; returns them (empty when disabled).

    ``settings``: the mesh the run belongs to (its lake names the datasets, its home holds the
    default events file)."""
    if disabled():
        return []
    from mesh_platform.storage.lake import Lake
    from mesh_platform.lineage.events import run_events

    events = run_events(instance, run_id, lake=Lake(settings.lake))
    lineage = client(settings.home)
    path = events_file(settings.home)
    for event in events:
        with _locked(path):
            lineage.emit(event)
    lineage.close()
    return events


def read_events(path: Path | None) -> list[dict]:
    """The events in a JSON-lines events file (:func:`events_file`), as dictionaries (oldest first)."""
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
