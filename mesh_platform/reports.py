"""Links to the quality reports (GX Data Docs pages) that work from a browser on another machine.

A report is written into the lake next to the product's ports (``<domain>/<product>/_quality/<run>.html``)
and its link is stored as ``mesh/quality_report``. The link is never a ``file://`` path:

- ``MESH_REPORTS_URL`` set (e.g. ``https://mesh-reports.acme.example``): ``<MESH_REPORTS_URL>/<path in the lake>``,
  for whatever serves the lake's reports there (``mesh reports serve``, or a static site over the bucket);
- an S3 lake: the object's ``s3://`` URI (the report is kept in the lake; open it with the credentials of
  the lake, or set ``MESH_REPORTS_URL``);
- a local lake: ``http://<this host's name>:<MESH_REPORTS_PORT, default 3001>/<path>``, served by
  ``mesh reports serve`` (which serves quality reports only, never the data).
"""

from __future__ import annotations

import os
import socket
from pathlib import PurePosixPath

DEFAULT_PORT = 3001
QUALITY_FOLDER = "_quality"
SERVED_SUFFIXES = (".html", ".json")


def base_url(lake_root: str, environ=None) -> str | None:
    env = os.environ if environ is None else environ
    if env.get("MESH_REPORTS_URL"):
        return env["MESH_REPORTS_URL"].rstrip("/")
    if lake_root.startswith("s3://"):
        return None
    return f"http://{socket.getfqdn()}:{int(env.get('MESH_REPORTS_PORT') or DEFAULT_PORT)}"


def report_url(lake, relpath: str, environ=None) -> str:
    """The link to the report at ``relpath`` in ``lake`` (see the module's docstring)."""
    base = base_url(lake.root, environ)
    return f"{base}/{relpath.lstrip('/')}" if base else lake.uri(relpath)


def servable(relpath: str) -> bool:
    """Only quality reports are served: ``<domain>/<product>/_quality/<file>.html|json``, nothing else of the lake."""
    parts = PurePosixPath(relpath).parts
    return (
        len(parts) == 4
        and parts[2] == QUALITY_FOLDER
        and all(p not in ("", ".", "..") and not p.startswith(".") for p in parts)
        and parts[3].endswith(SERVED_SUFFIXES)
    )





def make_server(lake_root: str, host: str, port: int):
    """An HTTP server over a local lake that answers only :func:`servable` paths (404 for anything else)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    root = os.path.abspath(lake_root)

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self):
            relpath = unquote(urlsplit(self.path).path).lstrip("/")
            if not servable(relpath) or not os.path.isfile(os.path.join(root, relpath)):
                self.send_error(404, "not a quality report of this lake")
                return None
            return super().send_head()

        def list_directory(self, path):  # never list the lake
            self.send_error(404, "not a quality report of this lake")
            return None

        def log_message(self, format, *args):
            pass

    return ThreadingHTTPServer((host, port), partial(Handler, directory=root))
__all__ = ["DEFAULT_PORT", "base_url", "make_server", "report_url", "servable"]
