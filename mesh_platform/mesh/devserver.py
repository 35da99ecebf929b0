"""What ``mesh dev`` shows while ``dagster dev`` starts: each code location as it loads, then where the UI is.

``dagster dev`` starts a webserver, the daemon and one code server per domain, and says nothing
while the code servers import their domains (about half a minute for the demo on two cores). The
startup watcher asks the webserver's GraphQL API, once a second, which locations have loaded and
prints each one as it does (or the first line of its error), so a newcomer knows it is working.

``mesh dev`` also starts ``dagster dev`` with ``--log-level warning`` (unless given another level),
so the webserver, the daemon and the code servers print warnings and errors only (the daemon's
per-tick sensor messages stay out of the console), and it silences Dagster's notice that ``dagster
dev`` is superseded by ``dg dev`` (the project is a plain ``workspace.yaml`` deployment, which
``dagster dev`` is the command for).

That level does not reach the runs: a run's worker prints the run's log on the same console at the
instance's ``python_log_level``, INFO, because the same level decides what the UI's run log keeps
(a domain's ``context.log.info`` lines stay visible there). So that the console is at warning level
all the same, the platform logs nothing at INFO in a run or a sensor: what a step did is metadata
of its output (``mesh/landed_selection``, ``mesh/landed_files``, the Delta version, rows ...), a
product that cannot be built yet is a warning (what reads it is skipped), the lineage sensors'
per-run line and the vacuum's per-table line are debug. What can still print at INFO is a
domain's own ``context.log.info`` and Dagster's own step messages (e.g. a step skipped because
its upstream stored nothing). ``tests/test_mesh_end_to_end.py`` checks that the demo mesh's runs
log nothing at INFO.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Callable, Sequence

QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
#: the warning Dagster prints when `dagster dev` is used instead of `dg dev` (a regex for python -W)
SUPERSEDED_WARNING = "ignore:Function `dev_command` is superseded"


def option(args: Sequence[str], names: tuple[str, ...], default: str) -> str:
    """The value of a command-line option (``--port 3001`` or ``--port=3001``) in ``args``."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "=") and name.startswith("--"):
                return arg.split("=", 1)[1]
    return default


def dagster_dev_args(args: Sequence[str]) -> list[str]:
    """``dagster dev`` arguments: the user's, plus ``--log-level warning`` unless they chose a level."""
    args = list(args)
    if not any(a == "--log-level" or a.startswith("--log-level=") for a in args):
        args += ["--log-level", "warning"]
    return args


class StartupWatcher:
    """Prints each code location as it loads, then "ready"; :meth:`poll` returns ``True`` once done."""

    def __init__(self, host: str, port: str, locations: list[str], echo: Callable[[str], None], interval: float = 1.0):
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown_host}:{port}"
        self.locations = list(locations)
        self.echo = echo
        self.interval = interval
        self.started = time.monotonic()
        self.next_poll = self.started
        self.last_news = self.started
        self.seen: dict[str, str] = {}
        self.done = False

    def _entries(self) -> list[dict] | None:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": QUERY}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, KeyError, TypeError, ValueError):
            return None  # the webserver is not up yet

    def poll(self) -> bool:
        now = time.monotonic()
        if self.done or now < self.next_poll:
            return self.done
        self.next_poll = now + self.interval
        entries = self._entries() or []
        for entry in entries:
            name = entry["name"]
            if entry["loadStatus"] != "LOADED" or name in self.seen:
                continue
            error = entry.get("locationOrLoadError") or {}
            ok = error.get("__typename") == "RepositoryLocation"
            self.seen[name] = "loaded" if ok else "failed"
            first_line = next(iter((error.get("message") or "").strip().splitlines()), "")
            message = "loaded" if ok else f"FAILED to load: {first_line}".rstrip(": ")
            self.echo(f"  [{len(self.seen)}/{len(self.locations)}] {name} {message} ({now - self.started:.0f} s)")
            self.last_news = now
        expected = set(self.locations) or {e["name"] for e in entries}
        if expected and expected <= set(self.seen):
            failed = sorted(n for n, s in self.seen.items() if s == "failed")
            note = f" ({len(failed)} location(s) failed to load: {', '.join(failed)}; see the UI's Deployment page)" if failed else ""
            self.echo(f"ready in {now - self.started:.0f} s: open {self.url}{note}")
            self.done = True
        elif now - self.last_news >= 15:
            waiting = sorted(set(self.locations) - set(self.seen))
            self.echo(f"  still loading {', '.join(waiting)} ({now - self.started:.0f} s)")
            self.last_news = now
        return self.done
