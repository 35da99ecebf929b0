"""Start ``mesh serve``: the service over this deployment's lake, instance and keys, HTTP and Flight."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh_platform.foundations.settings import MeshSettings


@dataclass
class Running:
    http: object
    flight: object

    def stop(self) -> None:
        self.http.stop()
        self.flight.stop()


def start(settings: MeshSettings, domains_root: Path, host: str = "127.0.0.1", http_port: int = 0, flight_port: int = 0,
          memory_limit: str = "1GB", threads: int = 2) -> Running:
    import dagster as dg

    from mesh_platform.storage.lake import Lake
    from mesh_platform.serving.flight import FlightServer
    from mesh_platform.serving.http import HttpServer
    from mesh_platform.serving.service import MeshService
    from mesh_platform.serving.tokens import Verifier, _ensure_local_key, jwks_path

    jwks = jwks_path(settings.home)
    if not jwks.exists() and jwks == Path(settings.home) / "serve" / "jwks.json":
        _ensure_local_key(settings.home)  # local use: `mesh tokens issue` signs with the home's key
    service = MeshService(Lake(settings.lake), domains_root, dg.DagsterInstance.get(), memory_limit, threads, home=settings.home)
    verifier = Verifier(jwks, service.domains())
    http = HttpServer(service, verifier, host, http_port).start()
    flight = FlightServer(service, verifier, host, flight_port).start()
    return Running(http, flight)


__all__ = ["Running", "start"]
