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
``mesh reports serve`` the first time a page is asked for, or by ``mesh reports render``. An S3 lake
without ``MESH_REPORTS_URL`` links the ``s3://`` object, so its runs render the page themselves.
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
    from mesh_platform.quality import gx

    report, suite = load_report(lake.read_bytes(report_relpath))
    result = gx.validation_result(report, suite)
    stem = report_relpath[: -len(REPORT_SUFFIX)]
    import json

    lake.write_bytes(f"{stem}.json", json.dumps(result.to_json_dict(), default=str).encode())
    lake.write_bytes(f"{stem}.html", gx.render_html(result).encode())
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





def make_server(lake_root: str, host: str, port: int):
    """An HTTP server over a local lake that answers only :func:`servable` paths (404 for anything else)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    root = os.path.abspath(lake_root)

    from mesh_platform.storage.lake import Lake

    lake = Lake(root)
    import threading

    rendering = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self):
            relpath = unquote(urlsplit(self.path).path).lstrip("/")
            if servable(relpath) and not os.path.isfile(os.path.join(root, relpath)):
                stem = relpath.rsplit(".", 1)[0]
                if os.path.isfile(os.path.join(root, stem + REPORT_SUFFIX)):
                    with rendering:  # a run's report, rendered the first time it is asked for
                        if not os.path.isfile(os.path.join(root, relpath)):
                            render_pending(lake, stem + REPORT_SUFFIX)
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
__all__ = ["DEFAULT_PORT", "base_url", "load_report", "make_server", "render_all", "render_pending", "report_url", "save_report", "servable"]
