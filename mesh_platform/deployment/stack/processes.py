"""The stack's processes: started in their own process group, waited for, stopped with their children."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from mesh_platform.deployment.stack.layout import START_TIMEOUT, StackError, StackLayout, StackState


def alive(pid: int) -> bool:
    from mesh_platform.storage.lake import pid_alive

    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # only zombies left (children of a process that has not reaped them) do not count
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat, "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting{tail}")
        if ready():
            return
        time.sleep(0.3)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s" + (log_tail(log) if log else ""))


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f" (see {log}):\n    " + "\n    ".join(text) if text else f" (see {log})"


def start_process(layout: StackLayout, state: StackState, name: str, cmd: list[str], env: dict, cwd: Path, port: int | None, **user) -> subprocess.Popen:
    """Start a process of the stack in its own process group; ``user``: ``Popen``'s user/group arguments."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    log = layout.logs / f"{name.replace(':', '-')}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **user)
    state.processes.append({"name": name, "pid": proc.pid, "port": port, "log": str(log), "cmd": cmd})
    state.save(layout)
    return proc


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_processes(entries: list[dict], grace: float = 10.0) -> None:
    """End processes the stack started and everything in their process groups (run workers too):
    SIGTERM, then SIGKILL for what is still there after ``grace`` seconds."""
    groups = [e["pid"] for e in entries]
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.2)
    for pgid in groups:
        if group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.1)


def stop_process(entry: dict, grace: float = 10.0) -> None:
    stop_processes([entry], grace)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
