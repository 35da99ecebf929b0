"""Dead runs release what they hold; `mesh materialize` stops on SIGTERM.

A run left STARTED by a process that died (SIGKILL, a restarted machine) holds the domain's
concurrency-pool slots; the next `mesh` command marks it failed and frees them, so the next run of
the domain is not blocked for ever. `mesh materialize --in-process` blocked on a pool (held here by
a live run of another process) stops on SIGTERM: its run canceled, nothing left holding a slot.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT

from mesh_platform.mesh import run_cleanup


@pytest.fixture
def home(tmp_path, sources):
    env = {
        **os.environ,
        "MESH_HOME": str(tmp_path / "home"),
        "MESH_SOURCES": str(sources),
        "MESH_LAKE": str(tmp_path / "lake"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    first = subprocess.run([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", "--select", "policies"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    return env


def _hold_every_slot(instance: dg.DagsterInstance, pid: int, started: str) -> str:
    """A STARTED run of process ``pid`` holding every slot of the policies pool."""
    from dagster._core.test_utils import create_run_for_test

    run = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags={
        run_cleanup.HOST: socket.gethostname(), run_cleanup.PID: str(pid), run_cleanup.PROCESS_STARTED: started, "mesh/domain": "policies",
    })
    storage = instance.event_log_storage
    for n in range(storage.get_concurrency_info("policies").slot_count):
        assert storage.claim_concurrency_slot("policies", run.run_id, f"held_step_{n}").is_claimed
    return run.run_id


def test_a_run_whose_process_died_is_failed_and_its_slots_freed_by_the_next_command(home):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        dead = _hold_every_slot(instance, gone.pid, "1")
        assert len(instance.event_log_storage.get_concurrency_info("policies").claimed_slots) >= 1
    started = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", "--select", "policies"],
                           cwd=ROOT, env=home, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - started < 240  # not blocked on the dead run's slots
    assert f"run {dead}: its process died" in again.stderr
    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(dead)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert not [s for s in instance.event_log_storage.get_concurrency_info("policies").claimed_slots if s.run_id == dead]


def test_materialize_blocked_on_a_pool_stops_on_sigterm_and_cancels_its_run(home):
    holder = subprocess.Popen(["sleep", "300"])  # a live process: its run's slots are rightly held
    try:
        with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
            held = _hold_every_slot(instance, holder.pid, run_cleanup._started(holder.pid))
        proc = subprocess.Popen([sys.executable, "-m", "mesh_platform.cli", "materialize", "--in-process", "--select", "policies"],
                                cwd=ROOT, env=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.time() + 120
        with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
            while time.time() < deadline:  # bounded: until its run is waiting for the pool
                mine = [r for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={run_cleanup.PID: str(proc.pid)}))]
                if mine:
                    break
                time.sleep(0.5)
            assert mine, "the run never started"
            time.sleep(3)  # inside the wait for a slot
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("mesh materialize ignored SIGTERM for 60 s")
            assert proc.returncode == 128 + signal.SIGTERM, out
            assert "stopped by SIGTERM" in out
            run = instance.get_run_by_id(mine[0].run_id)
            assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE), run.status
            assert not [s for s in instance.event_log_storage.get_concurrency_info("policies").claimed_slots if s.run_id == run.run_id]
            assert instance.get_run_by_id(held).status == dg.DagsterRunStatus.STARTED  # a live process's run is left alone
    finally:
        holder.kill()
        holder.wait()
