"""The instance's Postgres: Debian's PostgreSQL as a cluster under ``$MESH_HOME/stack/postgres``, or a given URL.

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` user (Debian's
package creates it; else ``nobody``), and the folders above it get the "search" (``o+x``) bit so
that user can reach it. Each start recreates the Dagster database (the S3 server keeps objects in
memory, so the instance must start empty too); the cluster itself is kept, to start faster.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from mesh_platform.deployment.stack.layout import DATABASE, Progress, StackError, StackLayout, StackState, redact
from mesh_platform.deployment.stack.processes import free_port, log_tail


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


def as_user(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def give_to(user: str, path: Path, progress: Progress) -> None:
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
            give_to(user, pgdata, progress)
        progress(f"initialising a PostgreSQL cluster in {pgdata}")
        result = subprocess.run(
            as_user(user, [str(binary / "initdb"), "-D", str(pgdata), "-U", "mesh", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed for {pgdata}: {result.stderr.strip() or result.stdout.strip()}")
    if user:
        give_to(user, pgdata, progress)
        os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
    state.postgres = {"pgdata": str(pgdata), "port": port, "user": user, "bin": str(binary)}
    state.save(layout)
    result = subprocess.run(
        as_user(user, [str(binary / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=90,
    )
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start on 127.0.0.1:{port}: {result.stderr.strip() or result.stdout.strip()}{log_tail(log)}")
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
        as_user(info.get("user"), [str(Path(info["bin"]) / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"]),
        capture_output=True, text=True, timeout=60,
    )
    if pid_file.exists():  # pg_ctl could not stop it: end the postmaster by its pid
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass
