"""``mesh serve``'s Arrow Flight side: ``do_get`` of a product or of a SQL query, streamed in batches.

A ticket is JSON: ``{"product": "claims.claims", "columns": [...], "filter": [[col, op, value]],
"version": N, "major": M}`` or ``{"sql": "SELECT ..."}``. The caller sends its token as the
``authorization: Bearer <token>`` header of each call (``pyarrow.flight.FlightCallOptions``);
a middleware verifies it before anything else runs. ``list_flights`` lists the products the caller
may read rows of. A malformed ticket, a refused token or a refused read is a Flight error with
the reason; each is audited like an HTTP request.
"""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pyarrow.flight as flight

from mesh_platform.serving.service import MeshService, Refused
from mesh_platform.serving.tokens import TokenRefused, Verifier


class _AuthMiddleware(flight.ServerMiddleware):
    def __init__(self, caller):
        self.caller = caller


class _AuthFactory(flight.ServerMiddlewareFactory):
    def __init__(self, verifier: Verifier, service: MeshService):
        self.verifier, self.service = verifier, service

    def start_call(self, info, headers):
        values = headers.get("authorization") or headers.get("Authorization") or []
        try:
            return _AuthMiddleware(self.verifier.verify(values[0] if values else None))
        except TokenRefused as exc:
            self.service.audit.denied(None, None, f"flight {info.method}", str(exc), "flight")
            raise flight.FlightUnauthenticatedError(str(exc)) from None


def _error(exc: Refused) -> Exception:
    if exc.status == 403:
        return flight.FlightUnauthorizedError(str(exc))
    if exc.status == 408:
        return flight.FlightTimedOutError(str(exc))
    if exc.status == 429:
        return flight.FlightUnavailableError(str(exc))
    return flight.FlightServerError(f"{exc.status}: {exc}")


class FlightServer(flight.FlightServerBase):
    def __init__(self, service: MeshService, verifier: Verifier, host: str = "127.0.0.1", port: int = 0):
        super().__init__(f"grpc://{host}:{port}", middleware={"auth": _AuthFactory(verifier, service)})
        self.service = service
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"grpc://{self.host}:{self.port}"

    def _caller(self, context):
        return context.get_middleware("auth").caller

    def list_flights(self, context, criteria):
        caller = self._caller(context)
        for product in self.service.products(caller):
            if product["access"] in ("full", "masked"):
                ticket = json.dumps({"product": product["product"], "major": product["major"]}).encode()
                descriptor = flight.FlightDescriptor.for_path(*product["sql_name"].split("."))
                schema = pa.schema([])
                yield flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(self, context, ticket):
        caller = self._caller(context)
        try:
            request = json.loads(ticket.ticket.decode())
            if not isinstance(request, dict) or not ({"product", "sql"} & set(request)):
                raise ValueError("a ticket is a JSON object with `product` or `sql`")
            columns = request.get("columns")
            if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                raise ValueError("`columns` is a list of column names")
            version = request.get("version")
            major = request.get("major")
            if (version is not None and not isinstance(version, int)) or (major is not None and not isinstance(major, int)):
                raise ValueError("`version` and `major` are integers")
        except (ValueError, UnicodeDecodeError) as exc:
            self.service.audit.denied(None, caller.domain, "flight ticket", f"malformed ticket: {exc}", "flight", person=caller.subject)
            raise flight.FlightServerError(f"malformed ticket: {exc}") from None
        try:
            if "sql" in request:
                stream = self.service.sql(caller, str(request["sql"]), "flight")
            else:
                stream = self.service.read(caller, str(request["product"]), major, columns, request.get("filter"), version, "flight")
        except Refused as exc:
            raise _error(exc) from None

        def batches():
            try:
                yield from stream.batches
            except Refused as exc:
                raise _error(exc) from None
            except Exception as exc:  # noqa: BLE001 - a limit reached while streaming
                raise flight.FlightServerError(str(exc)) from None
            finally:
                stream.close()

        return flight.GeneratorStream(stream.schema, batches())

    def start(self) -> "FlightServer":
        self._thread = threading.Thread(target=self.serve, name="mesh-serve-flight", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()


__all__ = ["FlightServer"]
