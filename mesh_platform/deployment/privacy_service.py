"""The privacy release service: the one identity that may read aggregate-only products.

A producer may grant a consumer a product only as differentially private aggregates (``port:
aggregate`` in its ``grants.yaml``). Storage grants whole objects, so a consumer whose own keys could
read such a product could read its rows too; the consumer's keys therefore hold nothing of it
(``infra/iam/<consumer>.json``), and the release is computed here, by a process holding the
``mesh-privacy`` identity (``infra/iam/mesh-privacy.json``: those products, read only) and the
privacy ledger, out of every domain's reach.

``POST /release`` with ``Authorization: Bearer <token>`` and a JSON body ``{"product": contract
id, "major": int, "query": the aggregate's metadata, "run_id": ..., "version": int | null}``. The
caller is the domain its token was issued to (``--tokens``: a JSON file ``{token: domain}`` the
deployment writes, each domain's token passed only to its own code server), never a name in the
request. The answer is an Arrow IPC stream of the release; its schema metadata carries the epsilon
spent and what remains of the grant's budget. Refusals are JSON ``{"error": ...}``: 401 for an
unknown token, 403 for an access decision or an exhausted budget (:func:`mesh_platform.storage.publishing.read_aggregate`
decides and debits exactly as for a local read), 400 for a malformed request.

The Dagster side is :func:`mesh_platform.storage.publishing.read_aggregate`: with ``MESH_PRIVACY_SERVICE``
and ``MESH_PRIVACY_TOKEN`` set (``mesh stack up`` sets them), it asks this service instead of reading
the product itself. Loopback by default (``--host``); one thread per request. On Kubernetes it runs
as its own Deployment in namespace ``mesh-privacy`` under the ``mesh-privacy`` role, reachable only
from the mesh's pods (``infra/helm/privacy-service.yaml``, written by ``mesh helm``).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa

MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: "PrivacyService"

    def log_message(self, fmt, *args) -> None:  # one line per request, to the service's log
        self.server.log.write(f"{self.address_string()} {fmt % args}\n")
        self.server.log.flush()

    def _refuse(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        from mesh_platform.governance.access import AccessDenied
        from mesh_platform.governance.privacy import PrivacyBudgetExhausted

        if self.path != "/release":
            return self._refuse(404, f"no such endpoint {self.path!r}: POST /release")
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        consumer = self.server.tokens.get(token)
        if not token or consumer is None:
            return self._refuse(401, "unknown or missing token: a domain's token comes from its deployment")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                raise ValueError(f"the body must be JSON of at most {MAX_BODY} bytes")
            request = json.loads(self.rfile.read(length))
            product, major, query = str(request["product"]), int(request["major"]), dict(request["query"])
            version = request.get("version")
            version = None if version is None else int(version)
        except (ValueError, KeyError, TypeError) as exc:
            return self._refuse(400, f"malformed release request: {exc}")
        try:
            frame, epsilon, remaining = self.server.release(consumer, product, major, query, request.get("run_id"), version)
        except (AccessDenied, PrivacyBudgetExhausted) as exc:
            return self._refuse(403, str(exc))
        except LookupError as exc:
            return self._refuse(404, str(exc))
        except Exception as exc:  # noqa: BLE001 (the caller gets the reason; the service goes on)
            return self._refuse(500, f"{type(exc).__name__}: {exc}")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({"mesh/epsilon": str(epsilon), "mesh/remaining": str(remaining)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apache.arrow.stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class PrivacyService(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, tokens: dict[str, str], lake_uri: str, log, host: str = "127.0.0.1", ledger: str | None = None):
        super().__init__((host, port), _Handler)
        self.tokens = tokens
        self.lake_uri = lake_uri
        self.log = log
        self.ledger = ledger  # its own ledger (None: the process's MESH_PRIVACY_LEDGER)

    def release(self, consumer: str, product: str, major: int, query: dict, run_id: str | None, version: int | None):
        from mesh_platform.contracts.registry import mesh_registry
        from mesh_platform.storage import publishing
        from mesh_platform.storage.lake import Lake

        contract = mesh_registry().get(product, major)
        result = publishing.release_aggregate(Lake(self.lake_uri), consumer, contract, query, run_id, version, self.ledger)
        return result.frame, result.epsilon, result.remaining


def main(argv: list[str] | None = None) -> None:
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m mesh_platform.deployment.privacy_service")
    parser.add_argument("--host", default="127.0.0.1", help="loopback unless the deployment's network policy guards it")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="JSON {token: domain}")
    parser.add_argument("--lake", required=True)
    args = parser.parse_args(argv)
    from mesh_platform.governance.privacy import ledger_url
    from mesh_platform.foundations.settings import MeshSettings

    # An entry point: the service's own process (`python -m mesh_platform.deployment.privacy_service`, started by
    # `mesh stack up` or its Kubernetes Deployment). Its settings are read here, once: the ledger is
    # MESH_PRIVACY_LEDGER or SQLite in the service's own MESH_HOME; the lake is given by --lake.
    settings = MeshSettings.from_env()
    tokens = json.loads(args.tokens.read_text())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with PrivacyService(args.port, tokens, args.lake, sys.stderr, host=args.host, ledger=ledger_url(settings.home)) as service:
        service.serve_forever()


if __name__ == "__main__":
    main()
