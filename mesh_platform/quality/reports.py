"""Links to the quality reports (GX Data Docs pages) that work from a browser on another machine.

A report is written into the lake next to the product's ports (``<domain>/<product>/_quality/<run>.html``)
and its link is stored as ``mesh/quality_report``. The link is never a ``file://`` path:

- ``MESH_REPORTS_URL`` set (e.g. ``https://mesh-reports.acme.example``): ``<MESH_REPORTS_URL>/<path in the lake>``,
  for whatever serves the lake's reports there (``mesh reports serve``, or a static site over the bucket);
- an S3 lake: the object's ``s3://`` URI (the report is kept in the lake; open it with the credentials of
  the lake, or set ``MESH_REPORTS_URL``);
- a local lake: ``http://<this host's name>:<MESH_REPORTS_PORT, default 3001>/<path>``, served by
  ``mesh reports serve`` (which serves quality reports only, never the data).

A run writes only its report's data (``<run>.report.json``, no Great Expectations import); GX's
validation result and Data Docs page are rendered from it off the run's critical path: by
``mesh reports serve`` the first time a page is asked for, or by ``mesh reports render``. Over an
S3 lake ``mesh reports serve`` renders into memory (its identity only reads reports); ``mesh stack
up`` runs it and Helm deploys it (``reports.yaml``), each setting ``MESH_REPORTS_URL``. An S3 lake
without ``MESH_REPORTS_URL`` links the ``s3://`` object, which nothing renders later, so there the
runs render the page themselves.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path, PurePosixPath

DEFAULT_PORT = 3001
QUALITY_FOLDER = "_quality"
SERVED_SUFFIXES = (".html", ".json")
REPORT_SUFFIX = ".report.json"  # what a run writes; the .html and GX .json are rendered from it


def save_report(lake, relpath: str, report, suite: str) -> None:
    """A run's quality report (``QualityReport``) as JSON: every rule and its result, no GX needed."""
    import json
    from dataclasses import asdict

    lake.write_bytes(relpath, json.dumps({
        "suite": suite, "product": report.product, "rows": report.rows, "seconds": report.seconds,
        "results": [{"rule": asdict(r.rule), "value": r.value, "passed": r.passed, "element_count": r.element_count,
                     "unexpected_count": r.unexpected_count, "examples": list(r.examples)} for r in report.results],
    }, default=str).encode())


def load_report(data: bytes):
    """(QualityReport, suite name) from :func:`save_report`'s JSON."""
    import json

    from mesh_platform.quality.evaluate import QualityReport, RuleResult
    from mesh_platform.quality.rules import Rule

    raw = json.loads(data)
    results = [RuleResult(Rule(**r["rule"]), r["value"], r["passed"], r["element_count"], r["unexpected_count"], tuple(r["examples"]))
               for r in raw["results"]]
    return QualityReport(raw["product"], raw["rows"], results, raw["seconds"]), raw["suite"]


def render_pending(lake, report_relpath: str) -> list[str]:
    """GX's validation result (``<run>.json``) and Data Docs page (``<run>.html``) from a run's
    ``<run>.report.json``; returns the paths written. Imports Great Expectations (seconds, once per process)."""
    result, html = render_report(lake.read_bytes(report_relpath))
    stem = report_relpath[: -len(REPORT_SUFFIX)]
    lake.write_bytes(f"{stem}.json", result)
    lake.write_bytes(f"{stem}.html", html)
    return [f"{stem}.json", f"{stem}.html"]


def render_all(lake_root: str) -> list[str]:
    """Render every report of a local lake that has no page yet (``mesh reports render``)."""
    from mesh_platform.storage.lake import Lake

    lake = Lake(lake_root)
    written = []
    for path in sorted(Path(lake_root).glob(f"*/*/{QUALITY_FOLDER}/*{REPORT_SUFFIX}")):
        relpath = path.relative_to(lake_root).as_posix()
        if not path.with_name(path.name[: -len(REPORT_SUFFIX)] + ".html").exists():
            written += render_pending(lake, relpath)
    return written


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





def render_report(report_json: bytes) -> tuple[bytes, bytes]:
    """GX's validation result (JSON) and Data Docs page (HTML) of a run's ``<run>.report.json``, in memory."""
    import json

    from mesh_platform.quality import gx

    report, suite = load_report(report_json)
    result = gx.validation_result(report, suite)
    return json.dumps(result.to_json_dict(), default=str).encode(), gx.render_html(result).encode()


class _Rendered:
    """Pages rendered from an S3 lake's reports, kept in memory (the service's identity only reads the
    lake): the newest :data:`CACHED_PAGES` of them."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size, self.pages = size, OrderedDict()

    def get(self, relpath: str) -> bytes | None:
        page = self.pages.get(relpath)
        if page is not None:
            self.pages.move_to_end(relpath)
        return page

    def put(self, relpath: str, page: bytes) -> None:
        self.pages[relpath] = page
        while len(self.pages) > self.size:
            self.pages.popitem(last=False)


CACHED_PAGES = 512


def make_server(lake_root: str, host: str, port: int):
    """An HTTP server over the lake's quality reports that answers only :func:`servable` paths (404 for
    anything else), on either backend.

    A page a run has not rendered is rendered from its ``<run>.report.json`` the first time it is
    asked for. Over a local lake the page is written beside the report (``mesh reports render``
    finds it done); over an S3 lake the service reads with an identity that may only read reports
    (``infra/iam/mesh-reports.json``), so rendered pages are kept in memory. A production deployment
    runs this service and sets ``MESH_REPORTS_URL`` to it: its runs then never import Great
    Expectations (seconds per run, on every hop of a change through the mesh)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    from mesh_platform.storage.lake import Lake

    lake = Lake(lake_root if lake_root.startswith("s3://") else os.path.abspath(lake_root))
    local = not lake.root.startswith("s3://")
    rendering = threading.Lock()
    cache = _Rendered(CACHED_PAGES)

    def read(relpath: str) -> bytes | None:
        try:
            return lake.read_bytes(relpath)
        except OSError:  # not stored (FileNotFoundError), or not readable
            return None

    def page(relpath: str) -> bytes | None:
        found = cache.get(relpath) or read(relpath)
        if found is not None:
            return found
        stem = relpath.rsplit(".", 1)[0]
        with rendering:  # a run's report, rendered the first time it is asked for
            found = cache.get(relpath) or read(relpath)
            if found is not None:
                return found
            data = read(stem + REPORT_SUFFIX)
            if data is None:
                return None
            result, html = render_report(data)
            if local:
                lake.write_bytes(f"{stem}.json", result)
                lake.write_bytes(f"{stem}.html", html)
            else:
                cache.put(f"{stem}.json", result)
                cache.put(f"{stem}.html", html)
            return html if relpath.endswith(".html") else result

    class Handler(BaseHTTPRequestHandler):
        server_version = "mesh-reports"

        def _answer(self, body: bool) -> None:
            relpath = unquote(urlsplit(self.path).path).lstrip("/")
            found = page(relpath) if servable(relpath) and not relpath.endswith(REPORT_SUFFIX) else None
            if found is None:
                self.send_error(404, "not a quality report of this lake")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if relpath.endswith(".html") else "application/json")
            self.send_header("Content-Length", str(len(found)))
            self.end_headers()
            if body:
                self.wfile.write(found)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

        def log_message(self, format, *args):
            pass

    return ThreadingHTTPServer((host, port), Handler)


__all__ = ["DEFAULT_PORT", "base_url", "load_report", "make_server", "render_all", "render_pending", "render_report", "report_url", "save_report", "servable"]
