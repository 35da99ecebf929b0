"""A small client for ``mesh serve``: products and SQL answers as pandas or Arrow.

::

    from mesh_platform.serving.client import MeshClient

    client = MeshClient("http://127.0.0.1:8470", token)          # HTTP (Arrow IPC stream)
    claims = client.read("claims.claims", columns=["claim_id", "status"], filter=[["status", "=", "open"]])
    weekly = client.sql("SELECT product_line, count(*) AS n FROM claims.claims GROUP BY 1")
    table = MeshClient("grpc://127.0.0.1:8471", token).read_arrow("claims.claims")   # Arrow Flight

Errors are :class:`ServeError` with the service's status and reason.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

import pyarrow as pa


class ServeError(RuntimeError):
    def __init__(self, status: int | str, message: str):
        self.status = status
        super().__init__(f"{status}: {message}")


class MeshClient:
    def __init__(self, url: str, token: str, timeout: float = 300):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @property
    def _flight(self) -> bool:
        return self.url.startswith("grpc")

    def _http(self, method: str, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/vnd.apache.arrow.stream",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except ValueError:
                message = raw.decode(errors="replace")
            raise ServeError(exc.code, message) from None

    def _do_get(self, ticket: dict) -> pa.Table:
        import pyarrow.flight as flight

        client = flight.FlightClient(self.url)
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {self.token}".encode())], timeout=self.timeout)
        try:
            return client.do_get(flight.Ticket(json.dumps(ticket).encode()), options=options).read_all()
        except flight.FlightError as exc:
            raise ServeError(type(exc).__name__, str(exc).splitlines()[0]) from None
        finally:
            client.close()

    def read_arrow(self, product: str, columns: list[str] | None = None, filter: list | None = None,  # noqa: A002
                   version: int | None = None, major: int | None = None) -> pa.Table:
        if self._flight:
            ticket = {"product": product, "columns": columns, "filter": filter, "version": version, "major": major}
            return self._do_get({k: v for k, v in ticket.items() if v is not None})
        domain, _, name = product.partition(".")
        params = {k: v for k, v in {"columns": ",".join(columns) if columns else None, "filter": json.dumps(filter) if filter else None,
                                     "version": version, "major": major}.items() if v is not None}
        path = f"/products/{quote(domain)}/{quote(name)}" + (f"?{urlencode(params)}" if params else "")
        return pa.ipc.open_stream(self._http("GET", path)).read_all()

    def read(self, product: str, **kwargs):
        return self.read_arrow(product, **kwargs).to_pandas()

    def sql_arrow(self, query: str) -> pa.Table:
        if self._flight:
            return self._do_get({"sql": query})
        return pa.ipc.open_stream(self._http("POST", "/sql", {"query": query})).read_all()

    def sql(self, query: str):
        return self.sql_arrow(query).to_pandas()

    def aggregate(self, product: str, group_by: list[str], measures: list[dict], epsilon: float):
        body = {"product": product, "group_by": group_by, "measures": measures, "epsilon": epsilon}
        return pa.ipc.open_stream(self._http("POST", "/aggregate", body)).read_all().to_pandas()

    def products(self) -> list[dict]:
        return json.loads(self._http("GET", "/products"))["products"]


__all__ = ["MeshClient", "ServeError"]
