"""The lake: where output ports and private intermediates are stored, on disk or on S3.

Layout (``MESH_LAKE`` is the root; a local folder by default, ``s3://bucket/prefix`` in production)::

    <lake>/<domain>/<product>/v<major>/                  output port of a product, one per major: a Delta table
    <lake>/<domain>/<product>/v<major>_masked/           its masked variant (a Delta table), for uncleared consumers
    <lake>/<domain>/_private/<asset>/data.parquet        a domain's private intermediate (not a port)
    <lake>/<domain>/_private/<asset>/data.pickle         ... when it is not a table (a trained model)
    <lake>/<domain>/_quarantine/<asset>/<run>/<reason>.parquet   rows the asset rejected in one run

Output ports are Delta tables (:mod:`mesh_platform.storage.delta`: one commit per publish, reads at a
version). The rest is plain files, and writing them is atomic, so a failed or killed write never touches the last good version: locally the
file is written under a temporary name in the same folder and renamed over the old one (POSIX
rename is atomic); on S3 a single PUT or completed multipart upload is the commit, so readers see
either the old object or the new one, never a partial one.

Storage goes through ``pyarrow.fs``, one code path for both backends; S3 credentials and endpoint
come from the usual AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3`` ...).
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

DATA_FILE = "data.parquet"
PICKLE_FILE = "data.pickle"
PRIVATE = "_private"
QUARANTINE = "_quarantine"
STAGING_SUFFIX = ".staging"
STALE_STAGING_SECONDS = 24 * 3600  # a staging file of another machine is debris after a day


@dataclass(frozen=True)
class Published:
    uri: str
    rows: int | None
    bytes: int
    version: int | None = None  # the Delta version a port publish committed
    stored: int | None = None  # bytes the port keeps after it, every kept version included
    table_rows: int | None = None  # a partition publish: rows of the whole version it committed


def _s3_filesystem(parsed) -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        ep = urlparse(endpoint)
        kwargs["endpoint_override"] = ep.netloc or ep.path
        kwargs["scheme"] = ep.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


_HOST = socket.gethostname().replace(".", "-")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_staging(folder: str, now: float | None = None) -> list[str]:
    """Remove staging files left by killed publishes in ``folder``; returns what was removed.

    A staging file is debris when its writer (named in the file name) is a process of this machine
    that no longer runs, or when it is older than a day (a writer elsewhere). A live concurrent
    writer's file is left alone.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time() if now is None else now
    for name in names:
        if not (name.startswith(".") and name.endswith(STAGING_SUFFIX)):
            continue
        path = os.path.join(folder, name)
        parts = name[: -len(STAGING_SUFFIX)].rsplit(".", 3)  # .<file>.<host>.<pid>.<uuid>
        try:
            mine = len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit()
            dead = mine and not pid_alive(int(parts[2]))
            if dead or now - os.path.getmtime(path) > STALE_STAGING_SECONDS:
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue  # renamed or removed by its writer meanwhile
    return removed


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def name_part(value: object, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``_``; not starting with a digit), the only
    kind of domain, product or asset name a lake path is built from; :class:`ValueError` otherwise."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a name (letters, digits and _, not starting with a digit): no lake path is built from it")
    return value


class Lake:
    """A root URI plus the filesystem that serves it."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        parsed = urlparse(self.root)
        if parsed.scheme == "s3":
            self.fs: pafs.FileSystem = _s3_filesystem(parsed)
            self._base = (parsed.netloc + parsed.path).rstrip("/")
            self.is_local = False
        elif parsed.scheme in ("", "file"):
            self.fs = pafs.LocalFileSystem()
            self._base = os.path.abspath(parsed.path if parsed.scheme else self.root)
            self.is_local = True
        else:
            raise ValueError(f"MESH_LAKE must be a local folder or an s3:// URI, got {root!r}")

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # -- layout ---------------------------------------------------------------------------------
    # Every path is built from names checked by `name_part`: a domain, product or asset called
    # `..`, `a/b` or `` would otherwise reach out of its folder into another domain's.

    @staticmethod
    def port_path(domain: str, product: str, major: int, variant: str = "full") -> str:
        """The folder of a port's Delta table: ``full`` is the port itself; another variant
        (``masked``) is a sibling table ``v<major>_<variant>``, never inside the full one."""
        name_part(domain, "domain"), name_part(product, "product"), name_part(variant, "port variant")
        if variant == "full":
            return f"{domain}/{product}/v{major}"
        return f"{domain}/{product}/v{major}_{variant}"

    @staticmethod
    def private_table_path(domain: str, asset: str) -> str:
        """The Delta table of a partitioned private intermediate (each run replaces its own days)."""
        name_part(domain, "domain"), name_part(asset, "asset")
        return f"{domain}/{PRIVATE}/{asset}/delta"

    @staticmethod
    def private_path(domain: str, asset: str, table: bool = True) -> str:
        name_part(domain, "domain"), name_part(asset, "asset")
        return f"{domain}/{PRIVATE}/{asset}/{DATA_FILE if table else PICKLE_FILE}"

    @staticmethod
    def quarantine_path(domain: str, asset: str, run_id: str, name: str = "") -> str:
        """Where one run of ``asset`` keeps what it rejected (one folder per run: the history)."""
        name_part(domain, "domain"), name_part(asset, "asset")
        if not _RUN_ID.match(run_id) or (name and not _FILE_NAME.match(name)):
            raise ValueError(f"quarantine of {domain}/{asset}: run id {run_id!r} or file {name!r} is not a plain name")
        folder = f"{domain}/{QUARANTINE}/{asset}/{run_id}"
        return f"{folder}/{name}" if name else folder

    def _full(self, relpath: str) -> str:
        return f"{self._base}/{relpath}"

    def uri(self, relpath: str) -> str:
        return f"file://{self._full(relpath)}" if self.is_local else f"s3://{self._full(relpath)}"

    def size_under(self, relpath: str) -> int:
        """Bytes of every file under ``relpath`` (0 when there is nothing); staging files included."""
        selector = pafs.FileSelector(self._full(relpath), recursive=True, allow_not_found=True)
        return sum(info.size or 0 for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File)

    def exists(self, relpath: str) -> bool:
        return self.fs.get_file_info(self._full(relpath)).type == pafs.FileType.File

    # -- write ----------------------------------------------------------------------------------

    def _commit(self, relpath: str, write) -> int:
        """Run ``write(sink)`` so that ``relpath`` changes all at once or not at all; returns bytes."""
        final = self._full(relpath)
        if not self.is_local:
            # S3 has no folders, so no create_dir: pyarrow would probe the bucket (HeadBucket, which
            # IAM authorizes as s3:ListBucket on the whole bucket) and may write empty "folder"
            # marker objects, rights a domain's IAM policy (``mesh iam``) rightly does not hold.
            # The object's own key is all a PUT needs.
            with self.fs.open_output_stream(final) as sink:
                write(sink)
            return self.fs.get_file_info(final).size
        folder = final.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        sweep_staging(folder)
        # the writer's host and pid in the name let the next publish tell a crashed writer's file
        # from a concurrent writer's (see sweep_staging)
        staging = f"{folder}/.{final.rsplit('/', 1)[1]}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}{STAGING_SUFFIX}"
        try:
            with open(staging, "wb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())
            size = os.path.getsize(staging)
            os.replace(staging, final)
        except BaseException:
            if os.path.exists(staging):
                os.unlink(staging)
            raise
        return size

    def write_table(self, relpath: str, table: pa.Table) -> Published:
        size = self._commit(relpath, lambda sink: pq.write_table(table, sink, compression="snappy"))
        return Published(self.uri(relpath), table.num_rows, size)

    def write_bytes(self, relpath: str, payload: bytes) -> Published:
        size = self._commit(relpath, lambda sink: sink.write(payload))
        return Published(self.uri(relpath), None, size)

    def write_object(self, relpath: str, obj: Any) -> Published:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        size = self._commit(relpath, lambda sink: sink.write(payload))
        return Published(self.uri(relpath), None, size)

    # -- read -----------------------------------------------------------------------------------

    def read_table(self, relpath: str, columns: list[str] | None = None) -> pa.Table:
        full = self._full(relpath)
        if not self.exists(relpath):
            raise FileNotFoundError(f"nothing published at {self.uri(relpath)} yet: materialize its producer first")
        return pq.read_table(full, columns=columns, filesystem=self.fs)

    def read_schema(self, relpath: str) -> pa.Schema:
        return pq.read_schema(self._full(relpath), filesystem=self.fs)

    def read_object(self, relpath: str) -> Any:
        if not self.exists(relpath):
            raise FileNotFoundError(f"nothing stored at {self.uri(relpath)} yet: materialize it first")
        with self.fs.open_input_stream(self._full(relpath)) as src:
            return pickle.loads(src.read())

    def read_bytes(self, relpath: str) -> bytes:
        if not self.exists(relpath):
            raise FileNotFoundError(f"nothing stored at {self.uri(relpath)}")
        with self.fs.open_input_stream(self._full(relpath)) as src:
            return src.read()

    def list(self, relpath: str) -> list[str]:
        """Names directly under a folder (empty when it does not exist), sorted."""
        info = self.fs.get_file_info(self._full(relpath))
        if info.type != pafs.FileType.Directory:
            return []
        entries = self.fs.get_file_info(pafs.FileSelector(self._full(relpath), allow_not_found=True))
        return sorted(e.base_name for e in entries)
