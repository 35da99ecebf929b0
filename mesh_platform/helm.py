"""Values for Dagster's official Helm chart, generated from ``workspace.yaml`` and each ``domain.yaml``.

One user-code deployment per domain (a workspace entry): the domains' image, the module it serves
(``dagster code-server start``, what ``mesh stack up`` runs locally), its resources and its
environment. Secrets are only ever referenced (Kubernetes secret names, ``valueFrom``), never
written: a ``domain.yaml`` whose environment holds a literal value under a secret-looking name is
refused, naming the file and field.

A domain may tune its deployment in ``domain.yaml``::

    quotas: {cpu_request: "1", memory_request: 2Gi, memory_limit: 4Gi}   # its pod's resources
      env:
        CLAIMS_LANDING: s3://acme-mesh-landing/claims          # plain configuration
        POLICY_ADMIN_DB_URL: {secret: mesh-policy-admin-db, key: url}   # from a secret
      secrets: [mesh-claims-landing]                            # every key of these secrets

The instance part (Postgres, run queue, compute logs, telemetry) mirrors ``infra/dagster.yaml``;
a test keeps the two in agreement and the committed ``infra/helm/values.yaml`` up to date.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh_platform.contracts.loader import ContractError, Problem, display_path, load_yaml

SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^KEY$|_KEY_)", re.IGNORECASE)
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GRPC_PORT = 3030

# what a domain gets unless its domain.yaml says otherwise, by kind
def quota_resources(domain: str, domain_root: Path) -> dict[str, dict[str, str]]:
    """A deployment's Kubernetes resources: the domain's CPU and memory quotas (mesh_platform.quotas),
    so the mesh's ceilings bound them like every other quota."""
    from mesh_platform.quotas import for_domain

    q = for_domain(domain, domain_root)
    return {"requests": {"cpu": q["cpu_request"], "memory": q["memory_request"]}, "limits": {"cpu": q["cpu_limit"], "memory": q["memory_limit"]}}


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    secret: str
    key: str


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    resources: dict[str, dict[str, str]] | None = None
    env: dict[str, str | SecretRef] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)


def deployment_of(domain_yaml: Path) -> tuple[str, Deployment]:
    """The domain's kind and its ``deployment`` section (defaults when absent)."""
    raw = load_yaml(domain_yaml) or {}
    shown = display_path(domain_yaml)
    try:
        deployment = Deployment.model_validate(raw.get("deployment") or {})
    except ValidationError as exc:
        raise ContractError([Problem(shown, ".".join(["deployment", *map(str, e["loc"])]), e["msg"]) for e in exc.errors()]) from None
    problems = []
    if deployment.resources is not None:
        problems.append(Problem(shown, "deployment.resources", "a deployment's resources are the domain's quotas: set quotas.cpu_request, cpu_limit, memory_request, memory_limit (docs/quotas.md)"))
    for name, value in deployment.env.items():
        if isinstance(value, str) and SECRET_NAME.search(name):
            problems.append(Problem(shown, f"deployment.env.{name}", "looks like a secret: reference it ({secret: NAME, key: KEY}), never write its value"))
    for i, name in enumerate(deployment.secrets):
        if not K8S_NAME.match(name):
            problems.append(Problem(shown, f"deployment.secrets[{i}]", f"{name!r} is not a Kubernetes secret name"))
    if problems:
        raise ContractError(problems)
    return str(raw.get("kind", "source-aligned")), deployment


def _instance(project: Path) -> dict:
    path = project / "infra" / "dagster.yaml"
    return load_yaml(path) if path.exists() else {}


def values(
    workspace: Path,
    *,
    image: str,
    lake: str,
    logs_bucket: str,
    postgres_host: str = "dagster-postgres.data.svc.cluster.local",
    region: str = "eu-west-1",
) -> dict[str, Any]:
    """The chart's values for the mesh of ``workspace``."""
    from mesh_platform.workspace import read_workspace

    project = workspace.parent
    repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    deployments = []
    problems: list[Problem] = []
    for entry in read_workspace(workspace):
        domain = entry.location
        domain_yaml = project / "domains" / domain / "domain.yaml"
        try:
            kind, spec = deployment_of(domain_yaml)
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        env = [
            {"name": "MESH_ENV", "value": "production"},
            {"name": "MESH_LAKE", "value": lake},
            {"name": "MESH_AUTOMATION", "value": "on"},
            {"name": "AWS_REGION", "value": region},
        ]
        for name, value in spec.env.items():
            if isinstance(value, SecretRef):
                env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}})
            else:
                env.append({"name": name, "value": value})
        deployments.append({
            "name": f"mesh-{domain.replace('_', '-')}",
            "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "codeServerArgs": ["-m", entry.module, "--location-name", domain],
            "port": GRPC_PORT,
            "includeConfigInLaunchedRuns": {"enabled": True},
            # the domain's own S3 identity (infra/iam/<domain>.json) and the masking key
            "envSecrets": [{"name": f"mesh-{domain.replace('_', '-')}-aws"}, {"name": "mesh-masking-key"}]
            + [{"name": s} for s in spec.secrets],
            "env": env,
            "labels": {"mesh/domain": domain, "mesh/kind": kind},
            "resources": quota_resources(domain, domain_yaml.parent),
            "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        })
    if problems:
        raise ContractError(problems)

    instance = _instance(project)
    coordinator = (instance.get("run_coordinator") or {}).get("config") or {}
    monitoring = instance.get("run_monitoring") or {}
    compute = ((instance.get("compute_logs") or {}).get("config")) or {}
    return {
        "global": {"postgresqlSecretName": "dagster-postgresql-secret"},
        "telemetry": {"enabled": bool((instance.get("telemetry") or {}).get("enabled", False))},
        # the instance's database: an existing Postgres; its password lives in the secret above
        "postgresql": {
            "enabled": False,
            "postgresqlHost": postgres_host,
            "postgresqlUsername": "dagster",
            "postgresqlDatabase": "dagster",
            "service": {"port": 5432},
        },
        "generatePostgresqlPasswordSecret": False,
        "computeLogManager": {
            "type": "S3ComputeLogManager",
            "config": {"s3ComputeLogManager": {"bucket": logs_bucket, "prefix": compute.get("prefix", "compute-logs"), "region": region}},
        },
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {"envSecrets": [{"name": "mesh-masking-key"}]}}},
        # runs over a range of days record one planned event per asset (see mesh_platform/__init__.py)
        "dagsterWebserver": {"env": [{"name": "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "value": "true"}]},
        "dagsterDaemon": {
            "env": [{"name": "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "value": "true"}],
            "enabled": True,
            "runCoordinator": {
                "enabled": True,
                "type": "QueuedRunCoordinator",
                "config": {"queuedRunCoordinator": {
                    "maxConcurrentRuns": coordinator.get("max_concurrent_runs", 10),
                    "tagConcurrencyLimits": coordinator.get("tag_concurrency_limits", []),
                }},
            },
            "runMonitoring": {
                "enabled": bool(monitoring.get("enabled", True)),
                "startTimeoutSeconds": monitoring.get("start_timeout_seconds", 180),
                "pollIntervalSeconds": monitoring.get("poll_interval_seconds", 30),
            },
        },
        "dagster-user-deployments": {"enabled": True, "enableSubchart": True, "deployments": deployments},
    }


HEADER = """\
# Values for Dagster's official Helm chart (dagster/dagster): one user-code deployment per domain.
# Generated by `mesh helm` from workspace.yaml and each domains/<domain>/domain.yaml: do not edit;
# change those files and run `mesh helm` again (a test fails when this file is out of date).
# Secrets are referenced by name only: dagster-postgresql-secret (the instance's database password),
# mesh-<domain>-aws (the domain's S3 identity, bound to infra/iam/<domain>.json), mesh-masking-key.
"""


def render(data: dict) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, width=120)


def write(workspace: Path, out: Path, **options) -> Path:
    text = render(values(workspace, **options))  # raises before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out
