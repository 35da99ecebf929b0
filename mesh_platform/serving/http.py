"""``mesh serve``'s HTTP side: products and SQL answers in the format the client asks for.

- ``GET /products``: what the caller may read (JSON).
- ``GET /products/<domain>/<product>?columns=a,b&filter=<json>&version=N&major=M``: the product.
- ``POST /sql`` with ``{"query": "SELECT ..."}``: the answer.
- ``POST /aggregate`` with a differentially private query: the release (aggregate-only products).

The ``Accept`` header chooses the format: ``application/vnd.apache.arrow.stream`` (the default),
``application/vnd.apache.parquet``, ``text/csv`` or ``application/x-ndjson`` (JSON lines); the
body is written batch by batch with chunked transfer encoding, so a large answer is never held
whole. An error before the first byte is a JSON body ``{"error": ...}`` with its status; a limit
reached while streaming ends the response early and is in the audit log.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa

from mesh_platform.serving.limits import LimitExceeded
from mesh_platform.serving.service import MeshService, Refused, Stream
from mesh_platform.serving.tokens import TokenRefused, Verifier

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
JSONL = "application/x-ndjson"
FORMATS = {ARROW: ARROW, "application/vnd.apache.arrow": ARROW, PARQUET: PARQUET, "application/parquet": PARQUET,
           CSV: CSV, JSONL: JSONL, "application/jsonl": JSONL, "application/json": JSONL, "*/*": ARROW}
MAX_BODY = 1024 * 1024


class _Chunked:
    """A file-like sink writing HTTP chunks (what pyarrow's writers write into)."""

    def __init__(self, wfile):
        self.wfile = wfile
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        return len(data)

    def flush(self) -> None:
        self.wfile.flush()

    def finish(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _format(accept: str | None) -> str:
    for part in (accept or "*/*").split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in FORMATS:
            return FORMATS[kind]
    raise Refused(406, f"cannot answer in {accept!r}: ask for one of {ARROW}, {PARQUET}, {CSV}, {JSONL}")


def _write(stream: Stream, fmt: str, sink: _Chunked) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == ARROW:
        with pa.ipc.new_stream(sink, stream.schema) as writer:
            for batch in stream.batches:
                writer.write_batch(batch)
    elif fmt == PARQUET:
        with pq.ParquetWriter(sink, stream.schema) as writer:
            for batch in stream.batches:
                writer.write_batch(batch)
    elif fmt == CSV:
        with pacsv.CSVWriter(sink, stream.schema) as writer:
            for batch in stream.batches:
                writer.write_batch(batch)
    else:
        for batch in stream.batches:
            lines = "".join(json.dumps(row, default=str) + "\n" for row in batch.to_pylist())
            sink.write(lines.encode())


class Handler(BaseHTTPRequestHandler):
    service: MeshService
    verifier: Verifier
    protocol_version = "HTTP/1.1"
    server_version = "mesh-serve"

    def log_message(self, format, *args):  # noqa: A002 - the audit log records requests, not stderr
        pass

    def _json(self, status: int, body) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _caller(self):
        return self.verifier.verify(self.headers.get("Authorization"))

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Refused(413, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object")
        return body

    def _send_stream(self, stream: Stream) -> None:
        try:
            fmt = _format(self.headers.get("Accept"))
        except Refused:
            stream.close()
            raise
        try:
            first = next(stream.batches, None)  # errors before the first byte still get a status
        except Refused:
            stream.close()
            raise
        except Exception as exc:  # noqa: BLE001 - a limit reached on the first batch, or a read that failed
            stream.close()
            raise Refused(413 if isinstance(exc, LimitExceeded) else 500, str(exc)) from None
        rest = stream.batches

        def all_batches():
            if first is not None:
                yield first
            yield from rest

        stream.batches = all_batches()
        self.send_response(200)
        self.send_header("Content-Type", fmt)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sink = _Chunked(self.wfile)
        try:
            _write(stream, fmt, sink)
            sink.finish()
        except Exception:  # noqa: BLE001 - a limit or an error mid-stream: end the response early
            self.close_connection = True
        finally:
            stream.close()

    def _handle(self, fn) -> None:
        try:
            fn()
        except TokenRefused as exc:
            self.service.audit.denied(None, None, self.path.split("?")[0], str(exc), "http")
            self._json(401, {"error": str(exc)})
        except Refused as exc:
            self._json(exc.status, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self):  # noqa: N802
        def run():
            url = urlparse(self.path)
            caller = self._caller()
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if parts == ["products"]:
                return self._json(200, {"consumer": caller.domain, "subject": caller.subject, "products": self.service.products(caller)})
            if len(parts) == 3 and parts[0] == "products":
                query = parse_qs(url.query)
                columns = query["columns"][0].split(",") if "columns" in query else None
                try:
                    filter_spec = json.loads(query["filter"][0]) if "filter" in query else None
                    version = int(query["version"][0]) if "version" in query else None
                    major = int(query["major"][0]) if "major" in query else None
                except ValueError as exc:
                    raise Refused(400, f"bad query parameter: {exc}") from None
                stream = self.service.read(caller, f"{parts[1]}.{parts[2]}", major, columns, filter_spec, version, "http")
                return self._send_stream(stream)
            raise Refused(404, "GET /products or /products/<domain>/<product>")

        self._handle(run)

    def do_POST(self):  # noqa: N802
        def run():
            path = urlparse(self.path).path.rstrip("/")
            caller = self._caller()
            body = self._body()
            if path == "/sql":
                query = body.get("query")
                if not isinstance(query, str):
                    raise Refused(400, 'send {"query": "SELECT ..."}')
                return self._send_stream(self.service.sql(caller, query, "http"))
            if path == "/aggregate":
                table = self.service.aggregate(caller, body, "http")
                return self._send_stream(Stream(table.schema, iter(table.to_batches())))
            raise Refused(404, "POST /sql or /aggregate")

        self._handle(run)


class HttpServer:
    def __init__(self, service: MeshService, verifier: Verifier, host: str = "127.0.0.1", port: int = 0):
        handler = type("BoundHandler", (Handler,), {"service": service, "verifier": verifier})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HttpServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mesh-serve-http", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["HttpServer"]
