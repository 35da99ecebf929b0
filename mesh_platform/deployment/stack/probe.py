"""The identity matrix of a running stack: what each domain's code server can read and write, measured.

``mesh stack matrix`` lists the prefixes of the stack's buckets (each port table and its masked
variant, each domain's private area and quarantine, the landing prefixes, the step logs) and, for
every domain, starts a probe **with exactly what that domain's code server holds**: the environment
the kernel keeps for the running code server (``/proc/<pid>/environ``: its keys, its home, its
privacy token) and its uid. The probe is domain code that does not call the platform: it asks the S3
server directly (boto3) to read an existing object under each prefix and to write a new one (deleted
again when the write was allowed), tries to read the other identities' process environments and
homes, tries to connect to the other domains' run forkservers (a connection there would have a
process forked with that domain's identity; ``mesh_platform.deployment.code_server``), and asks the
privacy release service for a release with its own token and with a forged one.
What the server refused is in its access log (``mesh audit --storage``).

The result is a table (``--markdown``: the one in ``docs/governance.md``); the stack test checks it
cell by cell against the grants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PROBE_OBJECT = "_mesh_probe"


@dataclass(frozen=True)
class Target:
    """One prefix of the stack's storage: ``read_key`` an object that exists under it (None: empty)."""

    name: str  # e.g. "policies/policyholders/v1", "claims/_private", "landing/claims", "step logs"
    bucket: str
    prefix: str
    read_key: str | None


def targets(client, lake_bucket: str, lake_prefix: str, landing_bucket: str, logs_bucket: str) -> list[Target]:
    """Every prefix worth asking about, with one existing object under each (listed as admin)."""
    found: dict[str, Target] = {}

    def keys(bucket: str, prefix: str = ""):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    base = f"{lake_prefix.strip('/')}/" if lake_prefix.strip("/") else ""
    for key in keys(lake_bucket, base):
        parts = key[len(base):].split("/")
        if len(parts) < 3:
            continue
        domain, second = parts[0], parts[1]
        name = f"{domain}/{second}" if second.startswith("_") else f"{domain}/{second}/{parts[2]}"
        prefix = base + (f"{domain}/{second}/" if second.startswith("_") else f"{domain}/{second}/{parts[2]}/")
        if name not in found or "_delta_log/" in key:  # prefer a log entry: every table has one
            found[name] = Target(name, lake_bucket, prefix, key)
    for key in keys(landing_bucket):
        domain = key.split("/", 1)[0]
        found.setdefault(f"landing/{domain}", Target(f"landing/{domain}", landing_bucket, f"{domain}/", key))
    logs = next(iter(keys(logs_bucket, "compute-logs/")), None)
    found["step logs"] = Target("step logs", logs_bucket, "compute-logs/", logs)
    return sorted(found.values(), key=lambda t: (t.bucket != lake_bucket, t.name))


def probe_storage(items: list[Target], who: str) -> list[dict]:
    """Read and write each target with the credentials in this process's environment (boto3's default chain)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client("s3", config=Config(retries={"max_attempts": 1}))
    results = []
    for target in items:
        read = write = False
        read_error = write_error = ""
        if target.read_key:
            try:
                client.get_object(Bucket=target.bucket, Key=target.read_key)["Body"].read(1)
                read = True
            except ClientError as exc:
                read_error = exc.response["Error"]["Code"]
        probe_key = f"{target.prefix}{PROBE_OBJECT}-{who}"
        try:
            client.put_object(Bucket=target.bucket, Key=probe_key, Body=b"probe")
            write = True
        except ClientError as exc:
            write_error = exc.response["Error"]["Code"]
        if write:
            try:
                client.delete_object(Bucket=target.bucket, Key=probe_key)
            except ClientError:
                pass
        results.append({"target": target.name, "read": read, "write": write, "read_error": read_error, "write_error": write_error,
                        "read_key": target.read_key})
    return results


def probe_files(paths: list[str]) -> list[dict]:
    """Whether each file (another process's environment, another identity's home or key) can be read."""
    results = []
    for path in paths:
        try:
            p = Path(path)
            if p.is_dir():
                list(p.iterdir())
            else:
                p.read_bytes()
            results.append({"path": path, "readable": True, "error": ""})
        except OSError as exc:
            results.append({"path": path, "readable": False, "error": type(exc).__name__})
    return results


def probe_sockets(paths: list[str]) -> list[dict]:
    """Whether each Unix socket (another domain's run forkserver) accepts a connection from here.

    Only ever asked of other identities' sockets (as root, where each runs as its own user): a
    forkserver that accepts and then reads nothing ends, and its code server starts a new one."""
    import socket

    results = []
    for path in paths:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            try:
                sock.connect(path)
                results.append({"path": path, "connected": True, "error": ""})
            except OSError as exc:
                results.append({"path": path, "connected": False, "error": type(exc).__name__})
    return results


def forkserver_sockets(pid: int) -> list[str]:
    """The listening socket paths of the run forkservers among ``pid``'s children (needs root, or the same user)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and b"multiprocessing.forkserver" in (stat.parent / "cmdline").read_bytes():
                children.append(stat.parent)
        except (OSError, ValueError, IndexError):
            continue
    inodes = set()
    for proc in children:
        for fd in proc.glob("fd/*"):
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[6] in inodes:
            paths.append(parts[7])
    return sorted(paths)


def probe_privacy(service: str | None, token: str | None, product: str, major: int, query: dict) -> list[dict]:
    """A release asked with this domain's own token, then with a forged one."""
    from mesh_platform.governance.privacy import ReleaseRefused, request_release

    if not service:
        return []
    results = []
    for label, used in (("own token", token or ""), ("forged token", "forged-" + os.urandom(8).hex())):
        try:
            request_release(service, used, product, major, query, None, None, timeout=60)
            results.append({"token": label, "released": True, "error": ""})
        except ReleaseRefused as exc:
            results.append({"token": label, "released": False, "error": str(exc)})
    return results


def _main() -> None:
    """The probe process: reads its plan as JSON on stdin, prints its findings as JSON."""
    plan = json.loads(sys.stdin.read())
    items = [Target(**t) for t in plan["targets"]]
    found = {
        "storage": probe_storage(items, plan["who"]),
        "files": probe_files(plan["files"]),
        "sockets": probe_sockets(plan.get("sockets", [])),
        "privacy": probe_privacy(os.environ.get("MESH_PRIVACY_SERVICE"), os.environ.get("MESH_PRIVACY_TOKEN"), **plan["release"]) if plan.get("release") else [],
    }
    print(json.dumps(found))


# -- the matrix, from the stack's side --------------------------------------------------------------


def process_environment(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        raw = fh.read()
    return {os.fsdecode(k): os.fsdecode(v) for k, sep, v in (item.partition(b"=") for item in raw.split(b"\0")) if sep}


def run_probe(pid: int, uid: int | None, plan: dict, cwd: str, timeout: float = 300) -> dict:
    """Run the probe with the environment and uid of the running process ``pid`` (a domain's code server)."""
    env = process_environment(pid)
    user = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    done = subprocess.run([sys.executable, "-m", "mesh_platform.deployment.stack.probe"], input=json.dumps(plan), capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout, **user)
    if done.returncode != 0:
        raise RuntimeError(f"the probe as pid {pid}'s identity failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(result: dict) -> str:
    return ("R" if result["read"] else "-") + ("W" if result["write"] else "-")


def markdown(matrix: dict[str, dict]) -> str:
    """The identity matrix as a Markdown table: one row per prefix, one column per domain."""
    domains = list(matrix)
    names = [r["target"] for r in next(iter(matrix.values()))["storage"]] if matrix else []
    lines = ["| prefix | " + " | ".join(domains) + " |", "| --- | " + " | ".join("---" for _ in domains) + " |"]
    for i, name in enumerate(names):
        lines.append(f"| `{name}` | " + " | ".join(cell(matrix[d]["storage"][i]) for d in domains) + " |")
    return "\n".join(lines)


def plan_for(who: str, items: list[Target], files: list[str], release: dict | None, sockets: list[str] = ()) -> dict:
    return {"who": who, "targets": [asdict(t) for t in items], "files": files, "release": release, "sockets": list(sockets)}


# a small release of the demo's aggregate-only product: what analytics may ask, and nobody else
RELEASE = {"product": "customer_care.conversations", "major": 1,
           "query": {"group_by": ["topic"], "measures": [{"kind": "count", "column": None, "lower": None, "upper": None}], "epsilon": 0.001}}


def measure(state, layout, release: dict | None = RELEASE) -> dict[str, dict]:
    """{domain: its probe's findings}, for every domain of the running stack ``state``."""
    from mesh_platform.deployment.s3_server import Credentials, S3Server
    from mesh_platform.deployment.stack.identities import Identity
    from mesh_platform.deployment.stack.layout import LAKE_URI, LANDING_BUCKET, LOGS_BUCKET

    server = S3Server(endpoint=state.env["AWS_ENDPOINT_URL_S3"], admin=Credentials(state.env["AWS_ACCESS_KEY_ID"], state.env["AWS_SECRET_ACCESS_KEY"]))
    bucket, _, prefix = LAKE_URI.removeprefix("s3://").partition("/")
    items = targets(server.client(), bucket, prefix, LANDING_BUCKET, LOGS_BUCKET)
    servers = {name.split(":", 1)[1]: p["pid"] for p in state.processes for name in [p["name"]] if name.startswith("code-server:")}
    matrix = {}
    for domain in state.locations:
        identity = Identity(**state.identities[domain])
        others = [f"/proc/{pid}/environ" for d, pid in servers.items() if d != domain]
        homes = [h for name, i in state.identities.items() if name != domain and (h := i.get("home"))]
        files = others + homes + [str(Path(h) / "tokens.json") for h in homes] + [str(layout.state_file)]
        # as root only: with one user for every process, the sockets are reachable by construction
        sockets = [path for d, pid in servers.items() if d != domain for path in forkserver_sockets(pid)] if os.geteuid() == 0 else []
        matrix[domain] = run_probe(servers[domain], identity.uid, plan_for(domain, items, files, release, sockets), state.locations[domain]["cwd"])
    return matrix


if __name__ == "__main__":
    _main()
