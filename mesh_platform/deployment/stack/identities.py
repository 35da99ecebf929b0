"""Who each process of ``mesh stack up`` is: its storage identity, its OS user, its home.

The stack runs every domain's code server (and the runs it launches) as that domain alone, the way
the Helm chart runs each domain in its own namespace with its own service account and IAM role:

- **Storage.** The S3 server enforces IAM (:mod:`mesh_platform.deployment.s3_server`). Each domain is an IAM
  user holding exactly its reviewed policy in ``infra/iam/<domain>.json`` (written by ``mesh iam``
  from the grants: its own prefix read/write, the granted ports read in the variant it is cleared
  for, nothing of an aggregate-only product), plus what the deployment itself needs: reading its
  own landing prefix (``s3://mesh-landing/<domain>/``) and writing step logs under
  ``compute-logs/`` (write only: one domain's step output is not another's to read). The privacy
  release service is ``mesh-privacy`` (``infra/iam/mesh-privacy.json``: aggregate-only products,
  read only); ``mesh serve`` is ``mesh-serve`` (output ports, read only); the quality reports
  service is ``mesh-reports`` (``infra/iam/mesh-reports.json``: the reports, read only); the daemon and webserver are ``mesh-operator`` (step logs, read only). The stack
  itself (creating buckets, uploading landed files) is ``admin``; its keys stay in the stack's
  state file, readable by root only. A domain missing from ``infra/iam`` gets no lake access at
  all, and the stack says so.
- **OS user.** Started as root, each domain's code server runs under its own unprivileged uid
  (:data:`BASE_UID` + its index; no account is created), so it cannot read another process's
  environment (``/proc/<pid>/environ``: the other domains' keys), signal it, or write its files.
  Started as another user, every process shares that user: storage still refuses each domain's
  keys what they are not granted, but a hostile domain could read a sibling's keys from ``/proc``;
  ``mesh stack up`` says so. Kubernetes (one pod and service account per domain) has no such gap.
- **Home.** Each domain gets its own ``MESH_HOME`` (``$MESH_HOME/stack/homes/<domain>``, mode 0700,
  owned by its uid): caches, quality reports and lineage events of one domain are not another's.
  The privacy ledger lives in the privacy service's home, out of every domain's reach; the masking
  key is passed only to the domains that pseudonymize (as in the Helm chart).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from mesh_platform.deployment.s3_server import Credentials, S3Server

BASE_UID = 64200  # + index: the stack's unprivileged users (no /etc/passwd entry needed)
PRIVACY = "mesh-privacy"
OPERATOR = "mesh-operator"
SERVE = "mesh-serve"
REPORTS = "mesh-reports"
LOGS_PREFIX = "compute-logs"


@dataclass
class Identity:
    name: str
    access_key_id: str
    secret_access_key: str
    uid: int | None = None  # None: the stack's own user
    home: str | None = None
    token: str | None = None  # what the privacy service knows this domain by

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key)

    def as_dict(self) -> dict:
        return asdict(self)


def separate_users() -> bool:
    """Whether each domain runs under its own uid: only possible when the stack starts as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


def domain_policy(reviewed: dict | None, domain: str, landing_bucket: str, logs_bucket: str) -> dict:
    """The domain's reviewed lake policy (None: no lake access) plus its landing prefix and step-log writes."""
    statements = list((reviewed or {}).get("Statement", []))
    statements += [
        {"Sid": "ReadOwnLanding", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [_arn(landing_bucket, f"{domain}/*")]},
        {"Sid": "ListOwnLanding", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [_arn(landing_bucket)],
         "Condition": {"StringLike": {"s3:prefix": [f"{domain}/*"]}}},
        {"Sid": "WriteStepLogs", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"], "Resource": [_arn(logs_bucket, f"{LOGS_PREFIX}/*")]},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def operator_policy(logs_bucket: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadStepLogs", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [_arn(logs_bucket, f"{LOGS_PREFIX}/*")]},
        {"Sid": "ListStepLogs", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [_arn(logs_bucket)]},
    ]}


def reviewed_policies(project: Path) -> dict[str, dict]:
    """{name: document} of ``infra/iam/*.json``, as ``mesh iam`` wrote them."""
    folder = project / "infra" / "iam"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def create(server: S3Server, project: Path, domains: list[str], landing_bucket: str, logs_bucket: str, homes: Path) -> tuple[dict[str, Identity], list[str]]:
    """Every identity of the stack, created on ``server``; and warnings (domains without a reviewed policy)."""
    reviewed = reviewed_policies(project)
    warnings = []
    identities: dict[str, Identity] = {}
    separate = separate_users()
    for index, domain in enumerate(domains):
        if domain not in reviewed:
            warnings.append(f"{domain}: no infra/iam/{domain}.json, so no lake access (`mesh iam --lake s3://acme-mesh-lake/lake` writes it from the grants)")
        creds = server.create_identity(f"mesh-{domain}", domain_policy(reviewed.get(domain), domain, landing_bucket, logs_bucket))
        identities[domain] = Identity(domain, creds.access_key_id, creds.secret_access_key,
                                      uid=BASE_UID + index if separate else None, home=str(homes / domain), token=secrets.token_urlsafe(32))
    privacy = server.create_identity(PRIVACY, reviewed.get(PRIVACY) or {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]})
    identities[PRIVACY] = Identity(PRIVACY, privacy.access_key_id, privacy.secret_access_key,
                                   uid=BASE_UID + len(domains) if separate else None, home=str(homes / PRIVACY))
    serve = server.create_identity(SERVE, reviewed.get(SERVE) or {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]})
    identities[SERVE] = Identity(SERVE, serve.access_key_id, serve.secret_access_key,
                                 uid=BASE_UID + len(domains) + 1 if separate else None, home=str(homes / SERVE))
    reports = server.create_identity(REPORTS, reviewed.get(REPORTS) or {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]})
    identities[REPORTS] = Identity(REPORTS, reports.access_key_id, reports.secret_access_key,
                                   uid=BASE_UID + len(domains) + 2 if separate else None, home=str(homes / REPORTS))
    operator = server.create_identity(OPERATOR, operator_policy(logs_bucket))
    identities[OPERATOR] = Identity(OPERATOR, operator.access_key_id, operator.secret_access_key)
    for identity in identities.values():
        if identity.home:
            prepare_home(Path(identity.home), identity.uid)
    return identities, warnings


def prepare_home(path: Path, uid: int | None) -> None:
    """A home only its owner can enter (0700), owned by the identity's uid when it has one."""
    path.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, uid)
    path.chmod(0o700)


def make_reachable(paths: list[Path], progress) -> None:
    """Let the domains' uids reach what they run: the project, the Python installation (the
    interpreter behind the virtual environment's link too), the instance's folder, the sources and
    their homes. Only the "search" bit (``o+x``, enter but not list) is added to folders above them,
    as the stack does for Postgres; each folder changed is named."""
    import sys
    import sysconfig

    targets = [*paths, Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent, Path(sys.base_prefix),
               Path(sysconfig.get_paths()["stdlib"]).resolve()]
    changed = []
    for path in targets:
        path.mkdir(parents=True, exist_ok=True) if path in paths else None
        for folder in [path, *path.parents]:
            try:
                mode = folder.stat().st_mode
                if not mode & 0o001:
                    folder.chmod(mode | 0o001)
                    changed.append(str(folder))
            except OSError:
                pass
    if changed:
        progress(f"made traversable (o+x) for the domains' users: {', '.join(sorted(set(changed)))}")


def popen_user(identity: Identity) -> dict:
    """``subprocess.Popen`` arguments that run a process as ``identity`` (nothing when it has no uid)."""
    if identity.uid is None:
        return {}
    return {"user": identity.uid, "group": identity.uid, "extra_groups": []}


def names_by_key(identities: dict[str, dict | Identity], admin: str | None = None) -> dict[str, str]:
    """{access key id: identity name}, for the access log."""
    found = {}
    for name, identity in identities.items():
        key = identity.access_key_id if isinstance(identity, Identity) else identity["access_key_id"]
        found[key] = name
    if admin:
        found[admin] = "admin"
    return found
