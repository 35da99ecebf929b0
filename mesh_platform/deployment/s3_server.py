"""An S3-speaking server on loopback that enforces IAM and keeps an access log: the stack's storage.

``mesh stack up`` (and the tests) run moto's server mode. With ``iam=True`` every request must be
signed by a known access key whose policies allow the action on the resource, as IAM does
(moto's ``INITIAL_NO_AUTH_ACTION_COUNT``: the first N requests are let through unchecked). The
helper spends exactly those N requests creating an ``admin`` IAM user with an allow-all policy and
its access key, then proves enforcement is on: a request signed with an unknown key must be
refused. From then on, everything (buckets, users, policies) goes through ``admin``'s credentials,
and each identity of the deployment is an IAM user holding exactly its generated policy
(:meth:`S3Server.create_identity`).

The server runs as ``python -m mesh_platform.deployment.s3_server``: moto's application wrapped in an access
log, one JSON line per request (time, access key, method, bucket, key, status), like S3's server
access logs. :func:`read_access_log` reads it back; ``mesh audit --storage`` shows the refusals
(status 403) with the identity that asked. The log is written by the server, not by the code that
made the request, so code that never calls the platform is recorded too.

What moto's IAM simulation evaluates (moto 5.x, ``moto/iam/access_control.py``): identity policies
of IAM users (inline and attached, also through groups) and of assumed roles; ``Effect``,
``Action``/``NotAction`` and ``Resource`` with ``*`` wildcards; an explicit Deny wins. It ignores
``Condition`` operators other than ``StringEquals`` on the few keys it fills in, so an
``s3:prefix`` ``StringLike`` condition on ``s3:ListBucket`` is not evaluated: the listing is
allowed for any prefix (object names, never their contents). Bucket policies and ACLs are not part
of the decision. moto 5.2.6 started authorizing requests by their API operation's name instead of
S3's IAM action (see :meth:`S3Server._check_s3_action_names`), which is why the lock holds moto
below it.

The server runs in its own process group and is stopped with it; the start-up wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REGION = "us-east-1"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# create_user, put_user_policy, create_access_key: the requests moto lets through before enforcing
_BOOTSTRAP_REQUESTS = 3
_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def env(self, endpoint: str) -> dict[str, str]:
        """The standard AWS environment a deployment gets (from its secret): what ``Lake`` reads."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": endpoint,
        }

    def as_dict(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}


@dataclass
class S3Server:
    iam: bool = False
    access_log: Path | None = None
    endpoint: str = ""
    admin: Credentials = field(default_factory=lambda: Credentials("testing", "testing"))
    _proc: subprocess.Popen | None = None

    def client(self, service: str = "s3", credentials: Credentials | None = None):
        import boto3
        from botocore.config import Config

        creds = credentials or self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            config=Config(retries={"max_attempts": 1}),  # a refusal is an answer, not a hiccup
        )

    def create_identity(self, name: str, policy: dict) -> Credentials:
        """An IAM user holding exactly ``policy`` (inline), and its access key (as admin)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-lake", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    # -- lifecycle ------------------------------------------------------------------------------

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "mesh_platform.deployment.s3_server", "--port", str(port)]
        return cmd + (["--access-log", str(self.access_log)] if self.access_log else [])

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_REQUESTS)
        else:
            env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        return env

    def start(self, port: int | None = None, spawn=None) -> "S3Server":
        """Start the server on ``port`` (a free one if None). ``spawn(cmd, env, port)``, when given,
        starts the process instead (the stack records it with its other processes)."""
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if spawn is not None:
            self._proc = spawn(self.command(port), self.environment(), port)
        else:
            self._proc = subprocess.Popen(self.command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=self.environment(), start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(150):  # bounded: at most ~30 s
            if self._proc.poll() is not None:
                raise RuntimeError(f"the S3 server (moto) exited with code {self._proc.returncode}")
            try:
                # the moto API path is never authenticated, and not counted as a request
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("the S3 server (moto) did not start within 30 s")
        if self.iam:
            self._bootstrap_admin()
        return self

    def _bootstrap_admin(self) -> None:
        from botocore.exceptions import ClientError

        iam = self.client("iam")
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        try:
            self.client("s3", Credentials("AKIAUNKNOWNKEY000000", "nope")).list_buckets()
        except ClientError as e:
            if e.response["Error"]["Code"] != "InvalidAccessKeyId":
                raise
        else:
            self.stop()
            raise RuntimeError("the S3 server accepted an unknown access key: IAM enforcement is off")
        self._check_s3_action_names()

    def _check_s3_action_names(self) -> None:
        """Refuse to run against a server that authorizes S3 requests by anything but S3's IAM actions.

        S3 authorizes ``ListObjectsV2`` as ``s3:ListBucket`` and every step of a multipart upload
        (``CreateMultipartUpload``, ``UploadPart``, ``CompleteMultipartUpload``) as ``s3:PutObject``
        (AWS Service Authorization Reference, "Actions defined by Amazon S3"). moto 5.2.6 checks the
        API operation's name instead (``s3:ListObjectsV2``, ``s3:CreateMultipartUpload``: no such IAM
        actions), which refuses correct policies. An identity holding exactly the IAM actions must get
        both through; otherwise the failure names the cause instead of surfacing as grant mismatches.
        """
        from botocore.exceptions import ClientError

        import moto

        bucket = "s3-server-action-names"
        self.client().create_bucket(Bucket=bucket)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"]},
                {"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            ],
        }
        client = self.client("s3", self.create_identity("s3-server-action-names", policy))
        for operation, action, call in [
            ("ListObjectsV2", "s3:ListBucket", lambda: client.list_objects_v2(Bucket=bucket, Prefix="p/")),
            ("CreateMultipartUpload", "s3:PutObject", lambda: client.create_multipart_upload(Bucket=bucket, Key="p/k")),
        ]:
            try:
                call()
            except ClientError as e:
                self.stop()
                raise RuntimeError(
                    f"moto {moto.__version__} refused {operation} to an identity allowed {action}, the IAM action S3 "
                    f"authorizes it by ({e.response['Error']['Code']}): this moto does not evaluate policies as S3 "
                    "does; install the locked set (requirements-lock.txt), see docs/production.md"
                ) from e

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the access log ---------------------------------------------------------------------------------


class AccessLog:
    """WSGI middleware: one JSON line per request, written after the server has answered it."""

    def __init__(self, app, path: Path):
        self.app = app
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)  # line-buffered: a reader sees whole lines

    def __call__(self, environ, start_response):
        status: list[str] = []

        def recording(code, headers, exc_info=None):
            status.append(code)
            return start_response(code, headers, exc_info)

        body = self.app(environ, recording)
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/moto-api"):
            self._write(environ, path, status[0] if status else "500")
        return body

    def _write(self, environ, path: str, status: str) -> None:
        found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", "")) or _CREDENTIAL.search(
            environ.get("QUERY_STRING", "").replace("X-Amz-Credential=", "Credential=").replace("%2F", "/"))
        bucket, _, key = path.lstrip("/").partition("/")
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "access_key": found.group(1) if found else None,
            "method": environ.get("REQUEST_METHOD", ""),
            "bucket": bucket,
            "key": key,
            "query": environ.get("QUERY_STRING", "")[:200],
            "status": int(status.split()[0]),
        }
        with self._lock:
            self._file.write(json.dumps(record) + "\n")


def read_access_log(path: Path, identities: dict[str, str] | None = None) -> list[dict]:
    """The access log's records; ``identities`` ({access key: name}) adds who each key belongs to."""
    if not path.exists():
        return []
    names = identities or {}
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash of the server
        record["identity"] = names.get(record.get("access_key") or "", "unknown key" if record.get("access_key") else "anonymous")
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> None:
    import argparse

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m mesh_platform.deployment.s3_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-log", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    served = AccessLog(app, args.access_log) if args.access_log else app
    run_simple(args.host, args.port, served, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
