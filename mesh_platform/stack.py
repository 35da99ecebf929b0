"""The production topology on one machine: ``mesh stack up`` / ``mesh stack down``.

What the Helm chart deploys (see ``infra/``), started as local processes on loopback:

| production                                   | here                                                        |
| -------------------------------------------- | ----------------------------------------------------------- |
| managed Postgres (``DAGSTER_POSTGRES_URL``)  | Debian's PostgreSQL, a cluster in ``$MESH_HOME/stack/postgres`` |
| S3: lake, landing bucket, compute logs       | moto's S3 server enforcing IAM, with an access log (objects kept in memory) |
| one IAM role per domain (``infra/iam``)      | one IAM user per domain holding that policy; its own OS user when started as root |
| the privacy release service                  | ``python -m mesh_platform.privacy_service`` as ``mesh-privacy`` |
| ``mesh serve`` beside the deployment          | ``mesh serve`` as ``mesh-serve`` (read-only on output ports) |
| one user-code deployment per domain          | one ``dagster code-server`` gRPC process per domain         |
| daemon, webserver                            | ``dagster-daemon run`` and ``dagster-webserver`` over a gRPC workspace |
| the instance (``infra/dagster.yaml``)        | the same file, in ``$MESH_HOME/stack/dagster_home``         |

Every process runs in its own process group; their pids, ports and log files are kept in
``$MESH_HOME/stack/stack.json``, which ``mesh stack down`` reads to stop exactly those processes
(and their children: run workers) and to check that their ports are closed. A failed start stops
whatever it had started.

Each domain's code server, and every run it launches, holds that domain's keys only, its own
``MESH_HOME`` and, started as root, its own uid (:mod:`mesh_platform.stack_identities`): storage, not
the platform's code, is the wall between domains. ``stack.json`` holds every identity's keys and is
readable by root only.

Each start is fresh: the S3 server keeps objects in memory, so ``up`` recreates the Dagster
database too (the Postgres cluster itself is kept, to start faster). PostgreSQL refuses to run as
root: as root, the cluster belongs to the ``postgres`` user (Debian's package creates it; else
``nobody``), and the folders above it get the "search" (``o+x``) bit so that user can reach it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse, urlunparse

import yaml

from mesh_platform.settings import MeshSettings

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


def redact(url: str) -> str:
    """A database URL with its password hidden (for messages)."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        return urlunparse(parsed._replace(netloc=netloc))
    return url


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (SQLAlchemy's ``postgresql+psycopg2://`` names a driver too)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else url


def check_postgres(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`StackError` naming the URL unless a Postgres server answers there."""
    import psycopg2

    try:
        psycopg2.connect(libpq_url(url), connect_timeout=int(max(1, timeout))).close()
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StackError(f"Postgres at {redact(url)} (DAGSTER_POSTGRES_URL) is unreachable: {reason}") from None


# -- layout and state ---------------------------------------------------------------------------


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


def alive(pid: int) -> bool:
    from mesh_platform.io.lake import pid_alive

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


def _wait(what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log) if log else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting{tail}")
        if ready():
            return
        time.sleep(0.3)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s" + (_tail(log) if log else ""))


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f" (see {log}):\n    " + "\n    ".join(text) if text else f" (see {log})"


# -- PostgreSQL -----------------------------------------------------------------------------------


def postgres_bin() -> Path:
    explicit = os.environ.get("MESH_PG_BIN")
    candidates = [Path(explicit)] if explicit else []
    candidates += sorted((Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise StackError("PostgreSQL server binaries not found (initdb, pg_ctl in /usr/lib/postgresql/*/bin or MESH_PG_BIN): install them, e.g. `apt-get install -y postgresql`")


def _postgres_user() -> str | None:
    """Who runs Postgres: this user, or (as root, which Postgres refuses) ``postgres`` / ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise StackError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def _give_to(user: str, path: Path, progress: Progress) -> None:
    """Make ``path`` (a folder) belong to ``user`` and reachable by it (o+x on the folders above)."""
    entry = pwd.getpwnam(user)
    for sub in [path, *path.rglob("*")]:
        os.chown(sub, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
            progress(f"  made {parent} searchable (o+x) so that the '{user}' user can reach its cluster")


def start_postgres(layout: StackLayout, state: StackState, progress: Progress) -> str:
    binary = postgres_bin()
    user = _postgres_user()
    pgdata = layout.pgdata
    log = layout.logs / "postgres.log"
    layout.logs.mkdir(parents=True, exist_ok=True)
    log.touch()
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir(parents=True, mode=0o700)
        if user:
            _give_to(user, pgdata, progress)
        progress(f"initialising a PostgreSQL cluster in {pgdata}")
        result = subprocess.run(
            _as(user, [str(binary / "initdb"), "-D", str(pgdata), "-U", "mesh", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed for {pgdata}: {result.stderr.strip() or result.stdout.strip()}")
    if user:
        _give_to(user, pgdata, progress)
        os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
    state.postgres = {"pgdata": str(pgdata), "port": port, "user": user, "bin": str(binary)}
    state.save(layout)
    result = subprocess.run(
        _as(user, [str(binary / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=90,
    )
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start on 127.0.0.1:{port}: {result.stderr.strip() or result.stdout.strip()}{_tail(log)}")
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres ships psycopg2
    base = f"postgresql+psycopg2://mesh@127.0.0.1:{port}"
    _recreate_database(f"{base}/postgres", DATABASE)
    progress(f"PostgreSQL {binary.parent.name} on 127.0.0.1:{port} (cluster {pgdata}, database {DATABASE})")
    return f"{base}/{DATABASE}"


def _recreate_database(admin_url: str, name: str) -> None:
    import psycopg2

    con = psycopg2.connect(libpq_url(admin_url), connect_timeout=10)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()


def stop_postgres(info: dict) -> None:
    if not info or not info.get("pgdata"):
        return
    pgdata = Path(info["pgdata"])
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    subprocess.run(
        _as(info.get("user"), [str(Path(info["bin"]) / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"]),
        capture_output=True, text=True, timeout=60,
    )
    if pid_file.exists():  # pg_ctl could not stop it: end the postmaster by its pid
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass


# -- processes -------------------------------------------------------------------------------------


def _start(layout: StackLayout, state: StackState, name: str, cmd: list[str], env: dict, cwd: Path, port: int | None, **user) -> subprocess.Popen:
    """Start a process of the stack in its own process group; ``user``: ``Popen``'s user/group arguments."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    log = layout.logs / f"{name.replace(':', '-')}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **user)
    state.processes.append({"name": name, "pid": proc.pid, "port": port, "log": str(log), "cmd": cmd})
    state.save(layout)
    return proc


def _signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_processes(entries: list[dict], grace: float = 10.0) -> None:
    """End processes the stack started and everything in their process groups (run workers too):
    SIGTERM, then SIGKILL for what is still there after ``grace`` seconds."""
    groups = [e["pid"] for e in entries]
    for pgid in groups:
        _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.2)
    for pgid in groups:
        if group_alive(pgid):
            _signal(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.1)


def stop_process(entry: dict, grace: float = 10.0) -> None:
    stop_processes([entry], grace)


def _dagster(*args: str) -> list[str]:
    return [sys.executable, "-m", "dagster", *args]


def code_server_cmd(module: str, location: str, port: int) -> list[str]:
    """What a user-code deployment runs (the Helm chart's ``codeServerArgs``)."""
    return _dagster("code-server", "start", "-h", "127.0.0.1", "-p", str(port), "-m", module, "--location-name", location)


# what no process of a domain inherits from the stack's own environment: the admin's keys, the
# masking key (given only where it is used), the stack's home
_NOT_INHERITED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MESH_MASKING_KEY", "MESH_PRIVACY_TOKEN", "MESH_PRIVACY_LEDGER")


def identity_env(state: StackState, name: str, **extra: str) -> dict:
    """The environment of a process running as identity ``name``: the stack's settings, its own keys and home."""
    from mesh_platform.stack_identities import Identity

    identity = Identity(**state.identities[name])
    base = {k: v for k, v in {**os.environ, **state.env}.items() if k not in _NOT_INHERITED}
    env = {**base, **identity.credentials.env(state.env["AWS_ENDPOINT_URL_S3"]), **extra}
    if identity.home:
        env.update(MESH_HOME=identity.home, HOME=identity.home)
    return env


def start_code_server(layout: StackLayout, state: StackState, domain: str) -> subprocess.Popen:
    from mesh_platform.stack_identities import Identity, popen_user

    info = state.locations[domain]
    identity = Identity(**state.identities[domain])
    extra = {"MESH_DOMAIN": domain, "MESH_PRIVACY_SERVICE": state.env.get("MESH_PRIVACY_SERVICE", ""), "MESH_PRIVACY_TOKEN": identity.token or ""}
    if info.get("masking_key"):
        extra["MESH_MASKING_KEY"] = state.masking_key
    return _start(layout, state, f"code-server:{domain}", code_server_cmd(info["module"], domain, info["port"]),
                  identity_env(state, domain, **extra), Path(info["cwd"]), info["port"], **popen_user(identity))


def grpc_ready(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("ready")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


# -- GraphQL ---------------------------------------------------------------------------------------


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the webserver answers a query with errors with a 500
        body = exc.read().decode(errors="replace")
        raise StackError(f"GraphQL error from {url} (HTTP {exc.code}): {body[:2000]}") from None
    if payload.get("errors"):
        raise StackError(f"GraphQL error from {url}: {payload['errors']}")
    return payload["data"]


LOCATIONS_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack cause { message stack cause { message stack } } }
        }
      }
    }
  }
}
"""

RELOAD_MUTATION = """
mutation ($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      loadStatus
      locationOrLoadError { __typename ... on PythonError { message stack cause { message stack cause { message stack } } } }
    }
  }
}
"""


@dataclass(frozen=True)
class LocationStatus:
    name: str
    loaded: bool
    error: str = ""

    def describe(self, project: Path | None = None) -> str:
        if self.loaded:
            return f"{self.name}: loaded"
        return f"{self.name}: FAILED to load: {self.error}"


def _location_status(entry: dict, project: Path | None) -> LocationStatus:
    loc = entry.get("locationOrLoadError") or {}
    if loc.get("__typename") == "RepositoryLocation":
        return LocationStatus(entry["name"], True)
    if loc.get("__typename") == "PythonError":
        return LocationStatus(entry["name"], False, _load_error(entry["name"], loc, project))
    return LocationStatus(entry["name"], False, f"not loaded ({entry.get('loadStatus')})")


def _load_error(domain: str, error: dict, project: Path | None) -> str:
    """The root cause's message, and the domain's file it comes from (when a stack names one)."""
    chain = [error]
    while isinstance(chain[-1].get("cause"), dict):
        chain.append(chain[-1]["cause"])
    message = " ".join((chain[-1].get("message") or "").split())
    where = ""
    frames = [frame for e in reversed(chain) for frame in reversed(e.get("stack") or [])]
    for frame in frames:
        text = frame.strip()
        if text.startswith('File "') and f"/domains/{domain}/" in text:
            path, _, rest = text[6:].partition('"')
            line = rest.split("line", 1)[-1].split(",")[0].strip() if "line" in rest else ""
            shown = os.path.relpath(path, project) if project and path.startswith(str(project)) else path
            where = f" ({shown}" + (f", line {line}" if line else "") + ")"
            break
    return f"{message}{where}"


def locations(webserver: str, project: Path | None = None, reload: str | None = None) -> list[LocationStatus]:
    """Every code location as the webserver sees it (``reload``: reload that one first)."""
    if reload:
        graphql(webserver, RELOAD_MUTATION, {"name": reload})
    data = graphql(webserver, LOCATIONS_QUERY)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise StackError(f"the webserver at {webserver} reports no workspace: {data}")
    return [_location_status(e, project) for e in data["locationEntries"]]


# -- up / down -------------------------------------------------------------------------------------


@dataclass
class Options:
    webserver_port: int = 3000
    postgres_url: str | None = None  # an existing server: none is started here
    automation: bool = True


def _workspace_entries(workspace: Path) -> list[tuple[str, str]]:
    """(location name, module) of each entry of the mesh's workspace.yaml."""
    from mesh_platform.workspace import read_workspace

    return [(entry.location, entry.module) for entry in read_workspace(workspace)]


def up(settings: MeshSettings, workspace: Path, options: Options, progress: Progress = print) -> StackState:
    layout = StackLayout.of(settings)
    previous = StackState.load(layout)
    if previous is not None:
        running = [p["name"] for p in previous.processes if group_alive(p["pid"])]
        if running or (previous.postgres.get("pgdata") and (Path(previous.postgres["pgdata"]) / "postmaster.pid").exists()):
            from mesh_platform.cli.stack import mesh_command

            raise StackError(f"a stack is already running from {layout.root} ({', '.join(running) or 'postgres'}): `{mesh_command()} stack down` first")
    if port_open(options.webserver_port):
        raise StackError(f"port {options.webserver_port} (webserver) is already in use: choose another with --port")
    if options.postgres_url:
        check_postgres(options.postgres_url)
    entries = _workspace_entries(workspace)

    state = StackState()
    state.save(layout)
    try:
        _up(settings, layout, state, workspace, entries, options, progress)
    except BaseException:
        progress("start failed: stopping what was started")
        down(settings, progress=lambda _m: None)
        raise
    return state


def _up(settings, layout: StackLayout, state: StackState, workspace: Path, entries, options: Options, progress: Progress) -> None:
    project = workspace.parent
    pg_url = options.postgres_url or start_postgres(layout, state, progress)

    # S3: lake, landing bucket, compute logs; IAM enforced, every request in the access log
    from mesh_platform import stack_identities
    from mesh_platform.s3_server import S3Server

    layout.access_log.unlink(missing_ok=True)  # each start is fresh, its log too
    server = S3Server(iam=True, access_log=layout.access_log)
    try:
        server.start(free_port(), spawn=lambda cmd, env, port: _start(layout, state, "s3", cmd, env, layout.root, port))
    except RuntimeError as exc:
        raise StackError(f"{exc}{_tail(layout.logs / 's3.log')}") from None
    endpoint = server.endpoint
    state.admin_key = server.admin.access_key_id

    state.env = {
        "MESH_HOME": settings.home,
        "MESH_SOURCES": settings.sources,
        "MESH_LAKE": LAKE_URI,
        "CLAIMS_LANDING": CLAIMS_LANDING_URI,
        "DAGSTER_HOME": str(layout.dagster_home),
        "DAGSTER_POSTGRES_URL": pg_url,
        "MESH_COMPUTE_LOGS_BUCKET": LOGS_BUCKET,
        "MESH_AUTOMATION": "on" if options.automation else "off",
        "MESH_ENV": "stack",
        "MESH_EXECUTOR": os.environ.get("MESH_EXECUTOR") or "in_process",
        "AWS_ACCESS_KEY_ID": server.admin.access_key_id,  # the operator's shell (`mesh stack env`) is admin
        "AWS_SECRET_ACCESS_KEY": server.admin.secret_access_key,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH", "")])),
    }
    for passthrough in ("MESH_SENSOR_INTERVAL", "MESH_AUTOMATION_INTERVAL", "MESH_WORKSPACE", "MESH_DOMAINS", "MESH_QUALITY_REPORTS"):
        if os.environ.get(passthrough):
            state.env[passthrough] = os.environ[passthrough]
    state.masking_key = os.environ.get("MESH_MASKING_KEY") or secrets.token_hex(32)
    state.save(layout)
    os.environ.update(state.env)  # this process reads the same instance and buckets below

    from mesh_platform.io import s3

    client = s3.client()
    for bucket in (LAKE_BUCKET, LANDING_BUCKET, LOGS_BUCKET):
        client.create_bucket(Bucket=bucket)
    progress(f"S3 (moto, IAM enforced) on {endpoint}: buckets {LAKE_BUCKET}, {LANDING_BUCKET}, {LOGS_BUCKET}; access log {layout.access_log}")
    landed = _upload_landing(Path(settings.sources))
    progress(f"landed {landed} claims file(s) from {settings.sources} in {CLAIMS_LANDING_URI}/")

    # who each process is: one IAM identity (and, as root, one uid and home) per domain
    domains = [loc for loc, _ in entries]
    identities, warnings = stack_identities.create(server, project, domains, LANDING_BUCKET, LOGS_BUCKET, layout.homes)
    state.identities = {name: identity.as_dict() for name, identity in identities.items()}
    state.save(layout)
    for warning in warnings:
        progress(f"warning: {warning}")
    if stack_identities.separate_users():
        stack_identities.make_reachable([project, layout.dagster_home, Path(settings.sources), layout.homes], progress)
        progress(f"identities: {', '.join(domains)} each with its own keys, uid and home; {stack_identities.PRIVACY} (aggregate-only products); {stack_identities.OPERATOR} (daemon, webserver)")
    else:
        progress(f"identities: {', '.join(domains)} each with its own keys and home; not root, so every process shares this user: "
                 "a domain's code could read another's keys from /proc (as root, or on Kubernetes, each runs as its own user)")
    _start_privacy_service(layout, state, project, identities[stack_identities.PRIVACY])

    # the instance: infra/dagster.yaml as is; its tables are created once, before anything uses them
    layout.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(instance_yaml(project), layout.dagster_home / "dagster.yaml")
    import dagster as dg

    with dg.DagsterInstance.from_config(str(layout.dagster_home)) as instance:
        instance.get_runs(limit=1)
    progress(f"Dagster instance {layout.dagster_home} (infra/dagster.yaml: Postgres {redact(pg_url)}, compute logs in s3://{LOGS_BUCKET})")
    _start_serve(layout, state, project, settings, identities[stack_identities.SERVE])
    progress(f"mesh serve as {stack_identities.SERVE} (read-only on output ports): HTTP {state.env['MESH_SERVE_HTTP']}, "
             f"Flight {state.env['MESH_SERVE_FLIGHT']}; tokens: `mesh tokens issue CONSUMER`")

    # one code server per domain, then the gRPC workspace the daemon and the webserver read
    procs = {}
    from mesh_platform.helm import pseudonymizes

    for location, module in entries:
        state.locations[location] = {"port": free_port(), "module": module, "cwd": str(project),
                                     "masking_key": pseudonymizes(_domain_root(project, module))}
        procs[location] = start_code_server(layout, state, location)
    for location, proc in procs.items():
        port = state.locations[location]["port"]
        _wait(f"code server of {location}", lambda port=port: grpc_ready(port), proc=proc, log=layout.logs / f"code-server-{location}.log")
    layout.workspace.write_text(yaml.safe_dump({"load_from": [
        {"grpc_server": {"host": "127.0.0.1", "port": state.locations[loc]["port"], "location_name": loc}} for loc, _ in entries
    ]}, sort_keys=False))
    progress(f"{len(entries)} code server(s): " + ", ".join(f"{loc} :{state.locations[loc]['port']}" for loc, _ in entries))

    env = identity_env(state, stack_identities.OPERATOR)
    daemon = _start(layout, state, "daemon", [sys.executable, "-m", "dagster._daemon", "run", "-w", str(layout.workspace)], env, layout.root, None)
    web_port = options.webserver_port
    web = _start(layout, state, "webserver", [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(web_port), "-w", str(layout.workspace)], env, layout.root, web_port)
    state.webserver = f"http://127.0.0.1:{web_port}"
    state.save(layout)
    _wait("dagster-webserver", lambda: _http_ok(f"{state.webserver}/server_info"), proc=web, log=layout.logs / "webserver.log")
    if daemon.poll() is not None:
        raise StackError(f"dagster-daemon exited with code {daemon.returncode}{_tail(layout.logs / 'daemon.log')}")
    progress(f"dagster-daemon (schedules, sensors, automation {'on' if options.automation else 'off'}, run queue) and dagster-webserver on {state.webserver}")


def _domain_root(project: Path, module: str) -> Path:
    """The folder of a workspace entry's domain: its module's package (``domains.claims.definitions``)."""
    return project.joinpath(*module.split(".")[:-1])


def _start_privacy_service(layout: StackLayout, state: StackState, project: Path, identity) -> None:
    """The privacy release service, as ``mesh-privacy``: the domains' tokens in its own home, the ledger there too."""
    from mesh_platform.stack_identities import popen_user

    home = Path(identity.home)
    tokens = home / "tokens.json"
    fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({i["token"]: name for name, i in state.identities.items() if i.get("token")}, out)
    if identity.uid is not None:
        os.chown(tokens, identity.uid, identity.uid)
    port = free_port()
    cmd = [sys.executable, "-m", "mesh_platform.privacy_service", "--port", str(port), "--tokens", str(tokens), "--lake", LAKE_URI]
    proc = _start(layout, state, "privacy-service", cmd, identity_env(state, identity.name), project, port, **popen_user(identity))
    _wait("the privacy release service", lambda: port_open(port), proc=proc, log=layout.logs / "privacy-service.log")
    state.env["MESH_PRIVACY_SERVICE"] = f"http://127.0.0.1:{port}"
    state.save(layout)


def _start_serve(layout: StackLayout, state: StackState, project: Path, settings, identity) -> None:
    """``mesh serve`` as ``mesh-serve``: read-only storage keys on the output ports, the stack's
    Dagster instance for its audit, tokens verified against the JWKS of the home that runs the
    stack (``mesh tokens issue`` signs with its key), and every domain's privacy token, with which
    it asks the privacy service for a caller's aggregates (it knows the caller from its JWT)."""
    from mesh_platform.serving.tokens import _ensure_local_key, jwks_path
    from mesh_platform.stack_identities import popen_user

    _ensure_local_key(settings.home)
    jwks = jwks_path(settings.home)
    os.chmod(jwks, 0o644)  # public keys; the signing key beside it stays the stack user's alone
    home = Path(identity.home)
    tokens = home / "privacy-tokens.json"
    fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({name: i["token"] for name, i in state.identities.items() if i.get("token")}, out)
    if identity.uid is not None:
        os.chown(tokens, identity.uid, identity.uid)
        from mesh_platform.stack_identities import make_reachable

        make_reachable([jwks.parent], lambda *_: None)
    http_port, flight_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "mesh_platform.cli", "serve", "--http-port", str(http_port), "--flight-port", str(flight_port)]
    env = identity_env(state, identity.name, MESH_SERVE_JWKS=str(jwks), MESH_PRIVACY_TOKENS=str(tokens),
                       DAGSTER_HOME=str(layout.dagster_home), MESH_PRIVACY_SERVICE=state.env.get("MESH_PRIVACY_SERVICE", ""))
    proc = _start(layout, state, "serve", cmd, env, project, http_port, **popen_user(identity))
    _wait("mesh serve", lambda: port_open(http_port) and port_open(flight_port), proc=proc, log=layout.logs / "serve.log")
    state.env["MESH_SERVE_HTTP"] = f"http://127.0.0.1:{http_port}"
    state.env["MESH_SERVE_FLIGHT"] = f"grpc://127.0.0.1:{flight_port}"
    state.save(layout)


def instance_yaml(project: Path) -> Path:
    path = project / "infra" / "dagster.yaml"
    if not path.exists():
        path = Path(__file__).resolve().parents[1] / "infra" / "dagster.yaml"
    return path


def _upload_landing(sources: Path) -> int:
    from mesh_platform.io import s3
    from mesh_platform.simulation import SourceLayout

    folder = SourceLayout(sources).claims_landing
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    for path in files:
        s3.put_file(f"{CLAIMS_LANDING_URI}/{path.name}", path.read_bytes())
    return len(files)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def down(settings: MeshSettings, progress: Progress = print) -> list[str]:
    """Stop every process the stack started (webserver and daemon first, Postgres last); check the ports."""
    layout = StackLayout.of(settings)
    state = StackState.load(layout)
    if state is None:
        progress(f"no stack to stop in {layout.root}")
        return []
    stopped = []
    # webserver and daemon first (nothing new is launched), then the code servers with their runs, S3 last
    for names in (("webserver", "daemon"), None, ("s3",)):
        batch = [p for p in state.processes if (p["name"] in names if names else p["name"] not in ("webserver", "daemon", "s3"))]
        batch = [p for p in batch if group_alive(p["pid"])]
        stop_processes(batch)
        stopped += [p["name"] for p in batch]
    if state.postgres.get("pgdata") and (Path(state.postgres["pgdata"]) / "postmaster.pid").exists():
        stop_postgres(state.postgres)
        stopped.append("postgres")
    ports = [p["port"] for p in state.processes if p.get("port")] + ([state.postgres["port"]] if state.postgres.get("port") else [])
    left = [p["name"] for p in state.processes if group_alive(p["pid"])]
    listening = [port for port in ports if port_open(port)]
    if left or listening:
        raise StackError(f"still running after stop: processes {left or '-'}, listening ports {listening or '-'}")
    layout.state_file.unlink(missing_ok=True)
    progress(f"stopped {', '.join(stopped) or 'nothing (already stopped)'}; no port left open")
    return stopped


def grpc_serving(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """Whether a Dagster code server answers its gRPC health check on ``port`` within ``timeout``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def status(settings: MeshSettings) -> dict:
    """Each process of the stack and each domain's location, as they are now: a code server is up only
    when it answers a gRPC health check (a killed one is DOWN within the check's 2 s, whatever the
    webserver still remembers), and its location is reported failing with it."""
    layout = StackLayout.of(settings)
    state = StackState.load(layout)
    if state is None:
        return {"running": False, "processes": [], "locations": []}
    procs = []
    for p in state.processes:
        alive = group_alive(p["pid"])
        if alive and p["name"].startswith("code-server:") and p.get("port"):
            alive = grpc_serving(p["port"])
        procs.append({"name": p["name"], "pid": p["pid"], "port": p.get("port"), "alive": alive, "log": p["log"]})
    pg = state.postgres
    if pg.get("pgdata"):
        procs.insert(0, {"name": "postgres", "pid": None, "port": pg.get("port"), "alive": (Path(pg["pgdata"]) / "postmaster.pid").exists(), "log": str(layout.logs / "postgres.log")})
    found = []
    if state.webserver and _http_ok(f"{state.webserver}/server_info"):
        project = Path(next(iter(state.locations.values()))["cwd"]) if state.locations else None
        found = [s.__dict__ for s in locations(state.webserver, project)]
    down = {p["name"].split(":", 1)[1]: p["port"] for p in procs if p["name"].startswith("code-server:") and not p["alive"]}
    from mesh_platform.cli.stack import mesh_command

    for loc in found:
        if loc["name"] in down:
            loc.update(loaded=False, error=f"its code server does not answer on port {down[loc['name']]} (`{mesh_command()} stack restart {loc['name']}`)")
    return {"running": any(p["alive"] for p in procs), "webserver": state.webserver, "processes": procs, "locations": found, "env": {k: v for k, v in state.env.items() if "SECRET" not in k}}


LAUNCH_MUTATION = """
mutation ($location: String!, $job: String!) {
  launchRun(executionParams: {selector: {repositoryLocationName: $location, repositoryName: "__repository__", jobName: $job}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUNS_QUERY = """
query {
  runsOrError(limit: 200) {
    ... on Runs {
      results {
        runId status jobName startTime endTime
        tags { key value }
        assetSelection { path }
        repositoryOrigin { repositoryLocationName }
      }
    }
  }
}
"""


def launch(webserver: str, location: str, job: str) -> str:
    """Launch ``job`` of code location ``location`` through the webserver (queued, then run by its code server)."""
    result = graphql(webserver, LAUNCH_MUTATION, {"location": location, "job": job})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise StackError(f"cannot launch {location}/{job}: {result}")
    return result["run"]["runId"]


def runs(webserver: str) -> list[dict]:
    """Every run (newest first) with its status, tags, assets and code location, as GraphQL reports them."""
    found = graphql(webserver, RUNS_QUERY)["runsOrError"]["results"]
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        run["location"] = (run.get("repositoryOrigin") or {}).get("repositoryLocationName")
        run["assets"] = ["/".join(a["path"]) for a in (run.get("assetSelection") or [])]
    return found


def restart(settings: MeshSettings, domain: str, progress: Progress = print) -> LocationStatus:
    """Start ``domain``'s code server again (same port), after a crash or a fix; reload it in the webserver."""
    layout = StackLayout.of(settings)
    state = StackState.load(layout)
    if state is None or domain not in state.locations:
        known = ", ".join(state.locations) if state else "no stack is running"
        raise StackError(f"no code server for domain {domain!r} in this stack ({known})")
    name = f"code-server:{domain}"
    old = state.process(name)
    if old is not None:
        if group_alive(old["pid"]):
            stop_process(old)
        state.processes.remove(old)
    port = state.locations[domain]["port"]
    deadline = time.monotonic() + 30
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc = start_code_server(layout, state, domain)
    _wait(f"code server of {domain}", lambda: grpc_ready(port), proc=proc, log=layout.logs / f"code-server-{domain}.log")
    project = Path(state.locations[domain]["cwd"])
    found = next(s for s in locations(state.webserver, project, reload=domain) if s.name == domain)
    progress(f"restarted the code server of {domain} on :{port}: {found.describe()}")
    return found
