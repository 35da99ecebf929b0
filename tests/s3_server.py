"""An S3-speaking server on loopback for tests: moto's server mode, optionally enforcing IAM.

Plain mode accepts any credentials. With ``iam=True`` the server authenticates and authorizes every
request like IAM does (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``: the first N requests are let through
unchecked, every later one needs a signature from a known access key whose policies allow the
action on the resource). The helper spends exactly those N requests creating an ``admin`` IAM user
with an allow-all policy and its access key, then proves enforcement is on: a request signed with
an unknown key must be refused. From then on, everything (creating buckets, users, policies) goes
through ``admin``'s credentials.

What moto's IAM simulation evaluates (moto 5.x, ``moto/iam/access_control.py``): identity policies
of IAM users (inline and attached, also through groups) and of assumed roles; ``Effect``,
``Action``/``NotAction`` and ``Resource`` with ``*`` wildcards; an explicit Deny wins. It ignores
``Condition`` operators other than ``StringEquals`` on the few keys it fills in, so an
``s3:prefix`` ``StringLike`` condition on ``s3:ListBucket`` is not evaluated: the listing is
allowed for any prefix. Bucket policies and ACLs are not part of the decision. moto 5.2.6 started authorizing requests by
their API operation's name instead of S3's IAM action (see ``_check_s3_action_names``), which is why
the lock holds moto below it.

The server runs in its own process group and is killed with it; the start-up wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

REGION = "us-east-1"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# create_user, put_user_policy, create_access_key: the requests moto lets through before enforcing
_BOOTSTRAP_REQUESTS = 3


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


@dataclass
class S3Server:
    iam: bool = False
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

    def start(self) -> "S3Server":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ)
        if self.iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_REQUESTS)
        else:
            env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):  # bounded: at most ~20 s
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._proc.returncode}")
            try:
                # the moto API path is never authenticated, and not counted as a request
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("moto server did not start within 20 s")
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
            raise RuntimeError("moto server accepted an unknown access key: IAM enforcement is off")
        self._check_s3_action_names()

    def _check_s3_action_names(self) -> None:
        """Refuse to test against a server that authorizes S3 requests by anything but S3's IAM actions.

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
