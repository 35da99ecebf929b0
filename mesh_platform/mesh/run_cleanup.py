"""Dead runs release what they hold: runs whose process died are failed and their pool slots freed.

A run that ``mesh materialize --in-process`` executes lives in that command's process. Killed with
SIGKILL (or the machine restarted), it stays ``STARTED`` in the instance for ever and keeps the
concurrency-pool slots its steps claimed: the next run of the domain waits on "blocked by limit for
pool" with nobody to free them. Runs launched through a code location are watched by Dagster's run
monitoring in the daemon; in-process runs have no launcher to ask, so the platform records where
each one runs (host, pid and the process's start time, which tells a reused pid apart) and every
``mesh`` command that opens the instance reaps the runs of this host whose process is gone:
marked failed, with the reason, and their slots freed.

``mesh materialize`` itself stops on SIGTERM and SIGINT: the run in progress is interrupted, marked
canceled and its slots freed (:func:`release_own_runs`).
"""

from __future__ import annotations

import os
import socket

import dagster as dg

HOST = "mesh/host"
PID = "mesh/pid"
PROCESS_STARTED = "mesh/process_started"
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22 of stat: starttime
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"  # alive, start time unknown (no /proc): treated as the same process


def process_tags() -> dict[str, str]:
    """Tags naming this process, for every run it executes itself."""
    pid = os.getpid()
    return {HOST: socket.gethostname(), PID: str(pid), PROCESS_STARTED: _started(pid) or "?"}


def _alive(run: dg.DagsterRun) -> bool:
    started = _started(int(run.tags[PID]))
    return started is not None and (started == run.tags.get(PROCESS_STARTED) or "?" in (started, run.tags.get(PROCESS_STARTED)))


def _release(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str, canceled: bool = False) -> None:
    if canceled:
        instance.report_run_canceled(run, message)
    else:
        instance.report_run_failed(run, message)
    storage = instance.event_log_storage
    if getattr(storage, "supports_global_concurrency_limits", False):
        storage.free_concurrency_slots_for_run(run.run_id)


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the unfinished runs this host executed in a process that is gone; free their slots."""
    host = socket.gethostname()
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST: host})):
        if PID not in run.tags or _alive(run):
            continue
        _release(instance, run, f"the process that executed this run (pid {run.tags[PID]} on {host}) is gone; "
                                "marked failed and its pool slots freed by the next mesh command")
        reaped.append(run.run_id)
    return reaped


def release_own_runs(instance: dg.DagsterInstance, why: str) -> list[str]:
    """Cancel the unfinished runs this process executes (on SIGTERM/SIGINT); free their slots."""
    mine = process_tags()
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST: mine[HOST], PID: mine[PID]})):
        _release(instance, run, f"mesh materialize stopped ({why}): run canceled, its pool slots freed", canceled=True)
        released.append(run.run_id)
    return released
