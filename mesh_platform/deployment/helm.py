"""Values for Dagster's official Helm chart, generated from ``workspace.yaml`` and each ``domain.yaml``.

One user-code deployment per domain (a workspace entry): the domains' image, the module it serves
(``dagster code-server start``, what ``mesh stack up`` runs locally), its resources and its
environment. Secrets are only ever referenced (Kubernetes secret names, ``valueFrom``), never
written: a ``domain.yaml`` whose environment holds a literal value under a secret-looking name is
refused, naming the file and field.

A domain may tune its deployment in ``domain.yaml``::

    quotas: {cpu_request: "1", memory_request: 2Gi, memory_limit: 4Gi}   # its pod's resources
    deployment:
      env:
        CLAIMS_LANDING: s3://acme-mesh-landing/claims          # plain configuration
        POLICY_ADMIN_DB_URL: {secret: mesh-policy-admin-db, key: url}   # from a secret
      secrets: [mesh-claims-landing]                            # every key of these secrets
      run_imports: [sklearn.ensemble]   # what its steps import: loaded once per code server, not per run

The instance part (Postgres, run queue, compute logs, telemetry) mirrors ``infra/dagster.yaml``;
a test keeps the two in agreement and the committed ``infra/helm/values.yaml`` up to date.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh_platform.deployment import run_pods
from mesh_platform.contracts.loader import ContractError, Problem, display_path, load_contract, load_yaml

SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^KEY$|_KEY_)", re.IGNORECASE)
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GRPC_PORT = 3030
RELEASE_NAMESPACE = "dagster"  # where the chart runs the webserver, daemon and code servers
LAUNCHER_SERVICE_ACCOUNT = "dagster"  # the chart's service account of the daemon and webserver (release "dagster")

# what a domain gets unless its domain.yaml says otherwise, by kind
def quota_resources(domain: str, domain_root: Path) -> dict[str, dict[str, str]]:
    """A deployment's Kubernetes resources: the domain's CPU and memory quotas (mesh_platform.governance.quotas),
    so the mesh's ceilings bound them like every other quota."""
    from mesh_platform.governance.quotas import for_domain

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
    # libraries the domain's own steps import (e.g. scikit-learn): its code server's run processes are
    # forked from one that imported them already (mesh_platform/deployment/run_preload.py)
    run_imports: list[str] = Field(default_factory=list)


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
    for i, name in enumerate(deployment.run_imports):
        if not MODULE_NAME.match(name):
            problems.append(Problem(shown, f"deployment.run_imports[{i}]", f"{name!r} is not a Python module name (e.g. sklearn.ensemble)"))
    for i, name in enumerate(deployment.secrets):
        if not K8S_NAME.match(name):
            problems.append(Problem(shown, f"deployment.secrets[{i}]", f"{name!r} is not a Kubernetes secret name"))
    if problems:
        raise ContractError(problems)
    return str(raw.get("kind", "source-aligned")), deployment


def pseudonymizes(domain_root: Path) -> bool:
    """Whether the domain's contracts (products and private) pseudonymize a column: only then does its
    deployment get the masking key. An unreadable contract counts as yes (the domain fails its load
    anyway, and naming it here would hide that failure behind a missing secret)."""
    from mesh_platform.governance.masking import needs_key

    contracts = []
    for path in sorted(domain_root.glob("contracts/**/*.yaml")):
        try:
            contracts.append(load_contract(path))
        except ContractError:
            return True
    return needs_key(contracts)


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
    role_arn_template: str = run_pods.DEFAULT_ROLE_ARN,
    release_namespace: str = RELEASE_NAMESPACE,
    reports_url: str | None = None,
) -> dict[str, Any]:
    """The chart's values for the mesh of ``workspace``; ``reports_url``: where the quality reports
    service is reached from a browser (default: its in-cluster address, ``reports.yaml``)."""
    from mesh_platform.mesh.workspace import read_workspace

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
            # aggregate-only products are released by the privacy service (privacy-service.yaml)
            {"name": "MESH_PRIVACY_SERVICE", "value": run_pods.privacy_service_url()},
            # runs link their quality reports there; it renders them (reports.yaml), so no run imports GX
            {"name": "MESH_REPORTS_URL", "value": reports_url or run_pods.reports_service_url()},
        ]
        for name, value in spec.env.items():
            if isinstance(value, SecretRef):
                env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}})
            else:
                env.append({"name": name, "value": value})
        resources = quota_resources(domain, domain_yaml.parent)
        masking = pseudonymizes(domain_yaml.parent)
        # every run of this location, whoever launches it: its namespace, service account, resources, secrets
        context = run_pods.container_context(domain, env=env, extra_secrets=spec.secrets, resources=resources, pull_policy="IfNotPresent",
                                             masking_key=masking)
        deployments.append({
            "name": f"mesh-{run_pods.slug(domain)}",
            "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "codeServerArgs": ["-m", entry.module, "--location-name", domain],
            "port": GRPC_PORT,
            # off: the chart's context would give runs the chart-wide service account and namespace;
            # DAGSTER_CONTAINER_CONTEXT below is the domain's own (mesh_platform/deployment/run_pods.py)
            "includeConfigInLaunchedRuns": {"enabled": False},
            # the code server's own identity: the domain's service account and IAM role
            "serviceAccount": {
                "create": True,
                "name": run_pods.service_account(domain),
                "annotations": {run_pods.ROLE_ANNOTATION: run_pods.role_arn(domain, role_arn_template)},
            },
            # the domain's own S3 identity (infra/iam/<domain>.json), the masking key if it pseudonymizes, its own secrets
            "envSecrets": [{"name": s} for s in run_pods.secrets(domain, spec.secrets, masking)],
            "env": [*env, {"name": run_pods.CONTAINER_CONTEXT_ENV, "value": json.dumps(context, sort_keys=True)}],
            "labels": {"mesh/domain": domain, "mesh/kind": kind},
            "resources": resources,
            "podSecurityContext": dict(run_pods.POD_SECURITY_CONTEXT),
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
        # each run's namespace, service account, resources and secrets come from its location's container
        # context (mesh_platform/deployment/run_pods.py), none from the launcher: nothing here is shared by all domains
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {"jobNamespace": release_namespace}}},
        # runs over a range of days record Dagster's per-day planned events (no env here): automation
        # sees a day in progress or failed only from them (mesh_platform.foundations.settings.planned_per_run)
        "dagsterDaemon": {
            "enabled": True,
            "runCoordinator": {
                "enabled": True,
                "type": "QueuedRunCoordinator",
                "config": {"queuedRunCoordinator": {
                    "maxConcurrentRuns": coordinator.get("max_concurrent_runs", 10),
                    "dequeueIntervalSeconds": coordinator.get("dequeue_interval_seconds", 5),
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
# mesh-<domain>-aws (the domain's S3 identity, bound to infra/iam/<domain>.json), mesh-masking-key
# (only for a domain that pseudonymizes). Each domain's runs start in its own namespace mesh-<domain>
# under its own service account (run-namespaces.yaml beside this file; docs/production.md, "Each
# domain's runs on Kubernetes").
"""

NAMESPACES_HEADER = """\
# Per domain: the namespace its runs start in, its runs' service account (annotated with its IAM
# role, bound to infra/iam/<domain>.json), a LimitRange at its CPU and memory quotas, and the right
# of Dagster's daemon and webserver to manage run Jobs there. Generated by `mesh helm` with
# values.yaml: apply before installing the chart. Create in each domain's namespace its own secrets
# (mesh-<domain>-aws, mesh-masking-key where values.yaml lists it, those its domain.yaml names) and
# the one thing every run pod takes from the release: the instance database's secret
# (dagster-postgresql-secret). Nothing of another domain belongs there.
"""


def render(data: dict) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, width=120)


def render_namespaces(data: dict, *, role_arn_template: str = run_pods.DEFAULT_ROLE_ARN, release_namespace: str = RELEASE_NAMESPACE) -> str:
    resources = {d["labels"]["mesh/domain"]: d["resources"] for d in data["dagster-user-deployments"]["deployments"]}
    documents = run_pods.namespace_manifests(resources, role_arn_template=role_arn_template, release_namespace=release_namespace, launcher_service_account=LAUNCHER_SERVICE_ACCOUNT)
    return NAMESPACES_HEADER + yaml.safe_dump_all(documents, sort_keys=False, width=120)


def namespaces_path(values_path: Path) -> Path:
    return values_path.with_name("run-namespaces.yaml")


PRIVACY_HEADER = """\
# The privacy release service (mesh_platform/deployment/privacy_service.py): the only reader of aggregate-only
# products, under the mesh-privacy IAM role (infra/iam/mesh-privacy.json). Generated by `mesh helm`
# with values.yaml: apply before installing the chart. Create in its namespace mesh-privacy-tokens
# (tokens.json: {"<token>": "<domain>"}) and mesh-privacy-ledger (MESH_PRIVACY_LEDGER: a database
# URL for the privacy ledger), and in each domain's namespaces mesh-<domain>-privacy-token
# (MESH_PRIVACY_TOKEN: that domain's token, and no other domain's).
"""


def privacy_path(values_path: Path) -> Path:
    return values_path.with_name("privacy-service.yaml")


def render_privacy(data: dict, *, lake: str, region: str, role_arn_template: str = run_pods.DEFAULT_ROLE_ARN, release_namespace: str = RELEASE_NAMESPACE) -> str:
    image = data["dagster-user-deployments"]["deployments"][0]["image"]
    documents = run_pods.privacy_manifests(image=image, lake=lake, region=region, role_arn_template=role_arn_template, release_namespace=release_namespace)
    return PRIVACY_HEADER + yaml.safe_dump_all(documents, sort_keys=False, width=120)


SERVE_HEADER = """\
# mesh serve (docs/serving.md): every product's port over HTTP and Arrow Flight for consumers outside
# Dagster, through the same access decision as a Dagster read, under the mesh-serve IAM role
# (infra/iam/mesh-serve.json: read-only on output ports). Generated by `mesh helm` with values.yaml.
# Create in its namespace: the ConfigMap mesh-serve-jwks (jwks.json: your identity provider's public
# keys), the Secrets mesh-serve-instance (DAGSTER_POSTGRES_URL: its audit goes to the instance) and
# mesh-serve-privacy-tokens (privacy-tokens.json: {"<domain>": "<its privacy token>"}).
"""


def serve_path(values_path: Path) -> Path:
    return values_path.with_name("serve.yaml")


def render_serve(data: dict, *, lake: str, region: str, role_arn_template: str = run_pods.DEFAULT_ROLE_ARN, logs_bucket: str = "acme-mesh-logs") -> str:
    image = data["dagster-user-deployments"]["deployments"][0]["image"]
    documents = run_pods.serve_manifests(image=image, lake=lake, region=region, role_arn_template=role_arn_template, logs_bucket=logs_bucket)
    return SERVE_HEADER + yaml.safe_dump_all(documents, sort_keys=False, width=120)


REPORTS_HEADER = """\
# The quality reports service (mesh reports serve, docs/quality.md): renders the Data Docs page of each
# run's quality report when it is first opened, under the mesh-reports IAM role
# (infra/iam/mesh-reports.json: the reports, read only). The domains' runs link their reports to it
# (MESH_REPORTS_URL in values.yaml; `mesh helm --reports-url` names an Ingress in front of it).
# Generated by `mesh helm` with values.yaml.
"""


def reports_path(values_path: Path) -> Path:
    return values_path.with_name("reports.yaml")


def render_reports(data: dict, *, lake: str, region: str, role_arn_template: str = run_pods.DEFAULT_ROLE_ARN) -> str:
    image = data["dagster-user-deployments"]["deployments"][0]["image"]
    documents = run_pods.reports_manifests(image=image, lake=lake, region=region, role_arn_template=role_arn_template)
    return REPORTS_HEADER + yaml.safe_dump_all(documents, sort_keys=False, width=120)


def write(workspace: Path, out: Path, **options) -> list[Path]:
    """Write the values to ``out``, the domains' run namespaces beside it (``run-namespaces.yaml``), the
    privacy release service (``privacy-service.yaml``), ``mesh serve`` (``serve.yaml``) and the
    quality reports service (``reports.yaml``)."""
    data = values(workspace, **options)  # raises before anything is written
    texts = {
        out: render(data),
        namespaces_path(out): render_namespaces(data, **{k: v for k, v in options.items() if k in ("role_arn_template", "release_namespace")}),
        privacy_path(out): render_privacy(data, **{k: v for k, v in options.items() if k in ("lake", "region", "role_arn_template", "release_namespace")}),
        serve_path(out): render_serve(data, **{k: v for k, v in options.items() if k in ("lake", "region", "role_arn_template", "logs_bucket")}),
        reports_path(out): render_reports(data, **{k: v for k, v in options.items() if k in ("lake", "region", "role_arn_template")}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return list(texts)
