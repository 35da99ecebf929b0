"""Asking a running stack: the code servers over gRPC, the webserver's GraphQL API (locations, reloads, launches, runs)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mesh_platform.deployment.stack.layout import StackError


def grpc_ready(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("ready")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the webserver answers a query with errors with a 500
        body = exc.read().decode(errors="replace")
        raise StackError(f"GraphQL error from {url} (HTTP {exc.code}): {body[:2000]}") from None
    if payload.get("errors"):
        raise StackError(f"GraphQL error from {url}: {payload['errors']}")
    return payload["data"]


LOCATIONS_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack cause { message stack cause { message stack } } }
        }
      }
    }
  }
}
"""


RELOAD_MUTATION = """
mutation ($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      loadStatus
      locationOrLoadError { __typename ... on PythonError { message stack cause { message stack cause { message stack } } } }
    }
  }
}
"""


@dataclass(frozen=True)
class LocationStatus:
    name: str
    loaded: bool
    error: str = ""

    def describe(self, project: Path | None = None) -> str:
        if self.loaded:
            return f"{self.name}: loaded"
        return f"{self.name}: FAILED to load: {self.error}"


def _location_status(entry: dict, project: Path | None) -> LocationStatus:
    loc = entry.get("locationOrLoadError") or {}
    if loc.get("__typename") == "RepositoryLocation":
        return LocationStatus(entry["name"], True)
    if loc.get("__typename") == "PythonError":
        return LocationStatus(entry["name"], False, _load_error(entry["name"], loc, project))
    return LocationStatus(entry["name"], False, f"not loaded ({entry.get('loadStatus')})")


def _load_error(domain: str, error: dict, project: Path | None) -> str:
    """The root cause's message, and the domain's file it comes from (when a stack names one)."""
    chain = [error]
    while isinstance(chain[-1].get("cause"), dict):
        chain.append(chain[-1]["cause"])
    message = " ".join((chain[-1].get("message") or "").split())
    where = ""
    frames = [frame for e in reversed(chain) for frame in reversed(e.get("stack") or [])]
    for frame in frames:
        text = frame.strip()
        if text.startswith('File "') and f"/domains/{domain}/" in text:
            path, _, rest = text[6:].partition('"')
            line = rest.split("line", 1)[-1].split(",")[0].strip() if "line" in rest else ""
            shown = os.path.relpath(path, project) if project and path.startswith(str(project)) else path
            where = f" ({shown}" + (f", line {line}" if line else "") + ")"
            break
    return f"{message}{where}"


def locations(webserver: str, project: Path | None = None, reload: str | None = None) -> list[LocationStatus]:
    """Every code location as the webserver sees it (``reload``: reload that one first)."""
    if reload:
        graphql(webserver, RELOAD_MUTATION, {"name": reload})
    data = graphql(webserver, LOCATIONS_QUERY)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise StackError(f"the webserver at {webserver} reports no workspace: {data}")
    return [_location_status(e, project) for e in data["locationEntries"]]


def grpc_serving(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """Whether a Dagster code server answers its gRPC health check on ``port`` within ``timeout``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


LAUNCH_MUTATION = """
mutation ($location: String!, $job: String!) {
  launchRun(executionParams: {selector: {repositoryLocationName: $location, repositoryName: "__repository__", jobName: $job}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


RUNS_QUERY = """
query {
  runsOrError(limit: 200) {
    ... on Runs {
      results {
        runId status jobName startTime endTime
        tags { key value }
        assetSelection { path }
        repositoryOrigin { repositoryLocationName }
      }
    }
  }
}
"""


def launch(webserver: str, location: str, job: str) -> str:
    """Launch ``job`` of code location ``location`` through the webserver (queued, then run by its code server)."""
    result = graphql(webserver, LAUNCH_MUTATION, {"location": location, "job": job})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise StackError(f"cannot launch {location}/{job}: {result}")
    return result["run"]["runId"]


def runs(webserver: str) -> list[dict]:
    """Every run (newest first) with its status, tags, assets and code location, as GraphQL reports them."""
    found = graphql(webserver, RUNS_QUERY)["runsOrError"]["results"]
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        run["location"] = (run.get("repositoryOrigin") or {}).get("repositoryLocationName")
        run["assets"] = ["/".join(a["path"]) for a in (run.get("assetSelection") or [])]
    return found
