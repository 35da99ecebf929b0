"""Where a stack lives and what it started: its folders (``StackLayout``), its state file (``StackState``), its fixed names.

The buckets, region and database name here are the ones ``infra/`` deploys; ``stack.json`` holds every
process's pid, port and log, and every identity's keys (readable by the stack's user only).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse, urlunparse

from mesh_platform.foundations.settings import MeshSettings

LAKE_BUCKET = "acme-mesh-lake"  # the bucket infra/iam is written for: the stack applies those files as they are


LANDING_BUCKET = "mesh-landing"


LOGS_BUCKET = "mesh-logs"


LAKE_URI = f"s3://{LAKE_BUCKET}/lake"


CLAIMS_LANDING_URI = f"s3://{LANDING_BUCKET}/claims"


REGION = "us-east-1"


DATABASE = "dagster"


START_TIMEOUT = 180.0  # seconds, for each wait below


Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot start (or stop); the message names what is wrong."""


def mesh_command() -> str:
    """How to call this `mesh` from any shell: plain `mesh` when that is the one on PATH, else the
    absolute path of the `mesh` in use (the one this command was started as, or the one beside this
    Python: a virtual environment that is not activated), else ``python -m mesh_platform.cli``
    through this Python. Quoted for a shell."""
    import shlex
    import shutil

    candidates = []
    started_as = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started_as is not None and started_as.name == "mesh" and started_as.is_file():
        candidates.append(started_as.absolute())
    candidates.append(Path(sys.executable).parent / "mesh")
    found = shutil.which("mesh")
    for here in candidates:
        if here.is_file():
            if found and Path(found).resolve() == here.resolve():
                return "mesh"
            return shlex.quote(str(here))
    return f"{shlex.quote(sys.executable)} -m mesh_platform.cli"


def redact(url: str) -> str:
    """A database URL with its password hidden (for messages)."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        return urlunparse(parsed._replace(netloc=netloc))
    return url


@dataclass
class StackLayout:
    root: Path

    @classmethod
    def of(cls, settings: MeshSettings) -> "StackLayout":
        return cls(Path(settings.home) / "stack")

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def access_log(self) -> Path:
        return self.root / "s3-access.jsonl"

    @property
    def homes(self) -> Path:
        return self.root / "homes"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass
class StackState:
    processes: list[dict] = field(default_factory=list)  # name, pid, port, log, cmd
    postgres: dict = field(default_factory=dict)  # pgdata, port, user, bin (when started here)
    env: dict = field(default_factory=dict)
    webserver: str = ""
    locations: dict = field(default_factory=dict)  # domain -> {"port":, "module":}
    identities: dict = field(default_factory=dict)  # name -> Identity.as_dict(): keys, uid, home, token
    admin_key: str = ""  # the admin identity's access key id (its secret is in env)
    masking_key: str = ""  # given only to the domains that pseudonymize

    def save(self, layout: StackLayout) -> None:
        layout.root.mkdir(parents=True, exist_ok=True)
        tmp = layout.state_file.with_suffix(".tmp")
        # every identity's keys: the stack's own user only (the domains run as other uids when root)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(self.__dict__, indent=2))
        os.replace(tmp, layout.state_file)

    @classmethod
    def load(cls, layout: StackLayout) -> "StackState | None":
        try:
            return cls(**json.loads(layout.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def process(self, name: str) -> dict | None:
        return next((p for p in self.processes if p["name"] == name), None)


@dataclass
class Options:
    webserver_port: int = 3000
    postgres_url: str | None = None  # an existing server: none is started here
    automation: bool = True
