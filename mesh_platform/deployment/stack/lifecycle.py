"""``mesh stack up`` / ``down`` / ``status`` / ``restart``: the production topology started, checked and stopped.

Each domain's code server, and every run it launches, holds that domain's keys only, its own
``MESH_HOME`` and, started as root, its own uid (:mod:`mesh_platform.deployment.stack.identities`):
storage, not the platform's code, is the wall between domains. A failed start stops whatever it had
started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from mesh_platform.deployment.stack.layout import (
    CLAIMS_LANDING_URI,
    LAKE_BUCKET,
    LAKE_URI,
    LANDING_BUCKET,
    LOGS_BUCKET,
    REGION,
    Options,
    Progress,
    StackError,
    StackLayout,
    StackState,
    mesh_command,
    redact,
)
from mesh_platform.deployment.stack.postgres import check_postgres, start_postgres, stop_postgres
from mesh_platform.deployment.stack.processes import free_port, group_alive, http_ok, log_tail, port_open, start_process, stop_process, stop_processes, wait_for
from mesh_platform.deployment.stack.webserver import LocationStatus, grpc_ready, grpc_serving, locations
from mesh_platform.foundations.settings import PLANNED_PER_RUN, MeshSettings, planned_per_run


# what no process of a domain inherits from the stack's own environment: the admin's keys, the
# masking key (given only where it is used), the stack's home
_NOT_INHERITED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MESH_MASKING_KEY", "MESH_PRIVACY_TOKEN", "MESH_PRIVACY_LEDGER")


def identity_env(state: StackState, name: str, **extra: str) -> dict:
    """The environment of a process running as identity ``name``: the stack's settings, its own keys and home."""
    from mesh_platform.deployment.stack.identities import Identity

    identity = Identity(**state.identities[name])
    base = {k: v for k, v in {**os.environ, **state.env}.items() if k not in _NOT_INHERITED}
    env = {**base, **identity.credentials.env(state.env["AWS_ENDPOINT_URL_S3"]), **extra}
    if identity.home:
        env.update(MESH_HOME=identity.home, HOME=identity.home)
    return env


def start_code_server(layout: StackLayout, state: StackState, domain: str) -> subprocess.Popen:
    from mesh_platform.deployment import code_server
    from mesh_platform.deployment.stack.identities import Identity, popen_user

    info = state.locations[domain]
    identity = Identity(**state.identities[domain])
    extra = {"MESH_DOMAIN": domain, "MESH_PRIVACY_SERVICE": state.env.get("MESH_PRIVACY_SERVICE", ""), "MESH_PRIVACY_TOKEN": identity.token or ""}
    if info.get("masking_key"):
        extra["MESH_MASKING_KEY"] = state.masking_key
    # what a user-code deployment runs: Dagster's gRPC code server, its runs forked from a process
    # that has loaded the domain (mesh_platform.deployment.code_server)
    return start_process(layout, state, f"code-server:{domain}", code_server.command(info["module"], domain, info["port"]),
                  identity_env(state, domain, **extra), Path(info["cwd"]), info["port"], **popen_user(identity))


def _workspace_entries(workspace: Path) -> list[tuple[str, str]]:
    """(location name, module) of each entry of the mesh's workspace.yaml."""
    from mesh_platform.mesh.workspace import read_workspace

    return [(entry.location, entry.module) for entry in read_workspace(workspace)]


def up(settings: MeshSettings, workspace: Path, options: Options, progress: Progress = print) -> StackState:
    layout = StackLayout.of(settings)
    previous = StackState.load(layout)
    if previous is not None:
        running = [p["name"] for p in previous.processes if group_alive(p["pid"])]
        if running or (previous.postgres.get("pgdata") and (Path(previous.postgres["pgdata"]) / "postmaster.pid").exists()):
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
    from mesh_platform.deployment.stack import identities as stack_identities
    from mesh_platform.deployment.s3_server import S3Server

    layout.access_log.unlink(missing_ok=True)  # each start is fresh, its log too
    server = S3Server(iam=True, access_log=layout.access_log)
    try:
        server.start(free_port(), spawn=lambda cmd, env, port: start_process(layout, state, "s3", cmd, env, layout.root, port))
    except RuntimeError as exc:
        raise StackError(f"{exc}{log_tail(layout.logs / 's3.log')}") from None
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
        # per-day planned events, as in production, even with --no-automation: automation can be
        # turned on from the UI, and the UI's failed days come from them (settings.planned_per_run)
        PLANNED_PER_RUN: planned_per_run(True),
        "MESH_ENV": "stack",
        "MESH_EXECUTOR": os.environ.get("MESH_EXECUTOR") or "in_process",
        "AWS_ACCESS_KEY_ID": server.admin.access_key_id,  # the operator's shell (`mesh stack env`) is admin
        "AWS_SECRET_ACCESS_KEY": server.admin.secret_access_key,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH", "")])),
    }
    for passthrough in ("MESH_SENSOR_INTERVAL", "MESH_LANDING_SETTLE_SECONDS", "MESH_AUTOMATION_INTERVAL", "MESH_WORKSPACE", "MESH_DOMAINS", "MESH_QUALITY_REPORTS"):
        if os.environ.get(passthrough):
            state.env[passthrough] = os.environ[passthrough]
    state.masking_key = os.environ.get("MESH_MASKING_KEY") or secrets.token_hex(32)
    state.save(layout)
    os.environ.update(state.env)  # this process reads the same instance and buckets below

    from mesh_platform.sources import s3

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
    _start_reports(layout, state, project, identities[stack_identities.REPORTS])
    progress(f"mesh serve as {stack_identities.SERVE} (read-only on output ports): HTTP {state.env['MESH_SERVE_HTTP']}, "
             f"Flight {state.env['MESH_SERVE_FLIGHT']}; tokens: `mesh tokens issue CONSUMER`")
    progress(f"quality reports as {stack_identities.REPORTS} (read-only on the reports): {state.env['MESH_REPORTS_URL']}")

    # one code server per domain, then the gRPC workspace the daemon and the webserver read
    procs = {}
    from mesh_platform.deployment.helm import pseudonymizes

    for location, module in entries:
        state.locations[location] = {"port": free_port(), "module": module, "cwd": str(project),
                                     "masking_key": pseudonymizes(_domain_root(project, module))}
        procs[location] = start_code_server(layout, state, location)
    for location, proc in procs.items():
        port = state.locations[location]["port"]
        wait_for(f"code server of {location}", lambda port=port: grpc_ready(port), proc=proc, log=layout.logs / f"code-server-{location}.log")
    layout.workspace.write_text(yaml.safe_dump({"load_from": [
        {"grpc_server": {"host": "127.0.0.1", "port": state.locations[loc]["port"], "location_name": loc}} for loc, _ in entries
    ]}, sort_keys=False))
    progress(f"{len(entries)} code server(s): " + ", ".join(f"{loc} :{state.locations[loc]['port']}" for loc, _ in entries))

    env = identity_env(state, stack_identities.OPERATOR)
    daemon = start_process(layout, state, "daemon", [sys.executable, "-m", "dagster._daemon", "run", "-w", str(layout.workspace)], env, layout.root, None)
    web_port = options.webserver_port
    web = start_process(layout, state, "webserver", [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(web_port), "-w", str(layout.workspace)], env, layout.root, web_port)
    state.webserver = f"http://127.0.0.1:{web_port}"
    state.save(layout)
    wait_for("dagster-webserver", lambda: http_ok(f"{state.webserver}/server_info"), proc=web, log=layout.logs / "webserver.log")
    if daemon.poll() is not None:
        raise StackError(f"dagster-daemon exited with code {daemon.returncode}{log_tail(layout.logs / 'daemon.log')}")
    progress(f"dagster-daemon (schedules, sensors, automation {'on' if options.automation else 'off'}, run queue) and dagster-webserver on {state.webserver}")


def _domain_root(project: Path, module: str) -> Path:
    """The folder of a workspace entry's domain: its module's package (``domains.claims.definitions``)."""
    return project.joinpath(*module.split(".")[:-1])


def _start_privacy_service(layout: StackLayout, state: StackState, project: Path, identity) -> None:
    """The privacy release service, as ``mesh-privacy``: the domains' tokens in its own home, the ledger there too."""
    from mesh_platform.deployment.stack.identities import popen_user

    home = Path(identity.home)
    tokens = home / "tokens.json"
    fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({i["token"]: name for name, i in state.identities.items() if i.get("token")}, out)
    if identity.uid is not None:
        os.chown(tokens, identity.uid, identity.uid)
    port = free_port()
    cmd = [sys.executable, "-m", "mesh_platform.deployment.privacy_service", "--port", str(port), "--tokens", str(tokens), "--lake", LAKE_URI]
    proc = start_process(layout, state, "privacy-service", cmd, identity_env(state, identity.name), project, port, **popen_user(identity))
    wait_for("the privacy release service", lambda: port_open(port), proc=proc, log=layout.logs / "privacy-service.log")
    state.env["MESH_PRIVACY_SERVICE"] = f"http://127.0.0.1:{port}"
    state.save(layout)


def _start_serve(layout: StackLayout, state: StackState, project: Path, settings, identity) -> None:
    """``mesh serve`` as ``mesh-serve``: read-only storage keys on the output ports, the stack's
    Dagster instance for its audit, tokens verified against the JWKS of the home that runs the
    stack (``mesh tokens issue`` signs with its key), and every domain's privacy token, with which
    it asks the privacy service for a caller's aggregates (it knows the caller from its JWT)."""
    from mesh_platform.deployment.stack.identities import popen_user

    from mesh_platform.serving.tokens import _ensure_local_key, jwks_path

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
        from mesh_platform.deployment.stack.identities import make_reachable

        make_reachable([jwks.parent], lambda *_: None)
    http_port, flight_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "mesh_platform.cli", "serve", "--http-port", str(http_port), "--flight-port", str(flight_port)]
    env = identity_env(state, identity.name, MESH_SERVE_JWKS=str(jwks), MESH_PRIVACY_TOKENS=str(tokens),
                       DAGSTER_HOME=str(layout.dagster_home), MESH_PRIVACY_SERVICE=state.env.get("MESH_PRIVACY_SERVICE", ""))
    proc = start_process(layout, state, "serve", cmd, env, project, http_port, **popen_user(identity))
    wait_for("mesh serve", lambda: port_open(http_port) and port_open(flight_port), proc=proc, log=layout.logs / "serve.log")
    state.env["MESH_SERVE_HTTP"] = f"http://127.0.0.1:{http_port}"
    state.env["MESH_SERVE_FLIGHT"] = f"grpc://127.0.0.1:{flight_port}"
    state.save(layout)


def _start_reports(layout: StackLayout, state: StackState, project: Path, identity) -> None:
    """``mesh reports serve`` as ``mesh-reports`` (the lake's quality reports, read only), and
    ``MESH_REPORTS_URL`` pointing at it for every process started after it: the code servers' runs
    then link their reports there and never import Great Expectations to render them."""
    from mesh_platform.deployment.stack.identities import popen_user

    port = free_port()
    cmd = [sys.executable, "-m", "mesh_platform.cli", "reports", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = start_process(layout, state, "reports", cmd, identity_env(state, identity.name), project, port, **popen_user(identity))
    wait_for("the quality reports service", lambda: port_open(port), proc=proc, log=layout.logs / "reports.log")
    state.env["MESH_REPORTS_URL"] = f"http://127.0.0.1:{port}"
    state.save(layout)


def instance_yaml(project: Path) -> Path:
    path = project / "infra" / "dagster.yaml"
    if not path.exists():
        path = Path(__file__).resolve().parents[3] / "infra" / "dagster.yaml"
    return path


def _upload_landing(sources: Path) -> int:
    from mesh_platform.sources import s3
    from mesh_platform.sources.simulation import SourceLayout

    folder = SourceLayout(sources).claims_landing
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    for path in files:
        s3.put_file(f"{CLAIMS_LANDING_URI}/{path.name}", path.read_bytes())
    return len(files)


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


def status(settings: MeshSettings) -> dict:
    """Each process of the stack and each domain's location, as they are now: a code server is up only
    when it answers a gRPC health check (a killed one is DOWN within the check's 2 s, whatever the
    webserver still remembers), and its location is reported failing with it."""
    layout = StackLayout.of(settings)
    state = StackState.load(layout)
    if state is None:
        return {"running": False, "processes": [], "locations": []}
    def alive(p: dict) -> bool:
        if not group_alive(p["pid"]):
            return False
        return grpc_serving(p["port"]) if p["name"].startswith("code-server:") and p.get("port") else True

    # the health checks run side by side: five servers that all hang still take one check's 2 s
    with ThreadPoolExecutor(max_workers=max(1, len(state.processes))) as pool:
        answers = list(pool.map(alive, state.processes))
    procs = [{"name": p["name"], "pid": p["pid"], "port": p.get("port"), "alive": up, "log": p["log"]} for p, up in zip(state.processes, answers)]
    pg = state.postgres
    if pg.get("pgdata"):
        procs.insert(0, {"name": "postgres", "pid": None, "port": pg.get("port"), "alive": (Path(pg["pgdata"]) / "postmaster.pid").exists(), "log": str(layout.logs / "postgres.log")})
    found = []
    if state.webserver and http_ok(f"{state.webserver}/server_info"):
        project = Path(next(iter(state.locations.values()))["cwd"]) if state.locations else None
        found = [s.__dict__ for s in locations(state.webserver, project)]
    down = {p["name"].split(":", 1)[1]: p["port"] for p in procs if p["name"].startswith("code-server:") and not p["alive"]}
    for loc in found:
        if loc["name"] in down:
            loc.update(loaded=False, error=f"its code server does not answer on port {down[loc['name']]} (`{mesh_command()} stack restart {loc['name']}`)")
    return {"running": any(p["alive"] for p in procs), "webserver": state.webserver, "processes": procs, "locations": found, "env": {k: v for k, v in state.env.items() if "SECRET" not in k}}


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
    wait_for(f"code server of {domain}", lambda: grpc_ready(port), proc=proc, log=layout.logs / f"code-server-{domain}.log")
    project = Path(state.locations[domain]["cwd"])
    found = next(s for s in locations(state.webserver, project, reload=domain) if s.name == domain)
    progress(f"restarted the code server of {domain} on :{port}: {found.describe()}")
    return found
