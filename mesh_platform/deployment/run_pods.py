"""Each domain's runs on Kubernetes: their namespace, service account, resources and secrets.

The Helm values (:mod:`mesh_platform.deployment.helm`) run one user-code deployment per domain; Dagster's
``K8sRunLauncher`` starts each run as a Kubernetes Job from the image and the *container context*
that the run's code location hands it. This module decides that context per domain, so that every
run of a domain, whoever launched it (a sensor, a schedule, automation, the UI, ``mesh materialize``),
runs:

- in the domain's own namespace ``mesh-<domain>``, under the domain's own service account
  ``mesh-<domain>``, annotated with the domain's IAM role (bound to ``infra/iam/<domain>.json``);
- with the CPU and memory of the domain's quotas (``docs/quotas.md``);
- with only the domain's own secrets: ``mesh-<domain>-aws`` (its S3 identity), ``mesh-masking-key``
  only when the domain pseudonymizes something itself, and whatever its ``domain.yaml`` references.

Why a namespace per domain: a run's tags may carry ``dagster-k8s/config``, and a domain's own code
chooses the tags of the runs its sensors and schedules request. The launcher cannot tell those tags
from the deployment's context (both are "user-defined" to it), so a tag could name another domain's
service account or secret. Kubernetes scopes both to a namespace: in ``mesh-fraud`` there is no
``mesh-policies`` service account and no ``mesh-policies-aws`` secret, so such a pod is refused by
the API server instead of running with another domain's identity. The namespace comes from the
container context, which the deployment sets through ``DAGSTER_CONTAINER_CONTEXT`` before any
domain code is imported; no run tag can change it.

The chart's own ``includeConfigInLaunchedRuns`` is off: it would hand runs the chart-wide service
account and the release namespace. :func:`render_run_job` renders the Job a domain's run would be,
with dagster-k8s's own launcher and no cluster (``mesh helm --show-runs``, and the tests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

CONTAINER_CONTEXT_ENV = "DAGSTER_CONTAINER_CONTEXT"
MASKING_KEY_SECRET = "mesh-masking-key"
DEFAULT_ROLE_ARN = "arn:aws:iam::111122223333:role/mesh-{domain}"
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"  # IRSA: the pod's AWS identity is the role's
# what a run pod runs as: the image's non-root user (infra/Dockerfile)
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001}


def slug(domain: str) -> str:
    """A domain's name as Kubernetes names allow it (``customer_care`` -> ``customer-care``)."""
    return domain.replace("_", "-")


def namespace(domain: str) -> str:
    return f"mesh-{slug(domain)}"


def service_account(domain: str) -> str:
    return f"mesh-{slug(domain)}"


def aws_secret(domain: str) -> str:
    """The secret holding the domain's S3 credentials (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``)."""
    return f"mesh-{slug(domain)}-aws"


def role_arn(domain: str, template: str = DEFAULT_ROLE_ARN) -> str:
    return template.format(domain=slug(domain))


def privacy_token_secret(domain: str) -> str:
    """The domain's token for the privacy release service (key ``MESH_PRIVACY_TOKEN``): who it is there."""
    return f"mesh-{slug(domain)}-privacy-token"


def secrets(domain: str, extra: Sequence[str] = (), masking_key: bool = True) -> list[str]:
    """Every secret a domain's pods see, and no other: its own identity (S3, and its token for the
    privacy release service), the masking key when it pseudonymizes anything
    (:func:`mesh_platform.governance.masking.needs_key`), its own extras."""
    return [aws_secret(domain), privacy_token_secret(domain), *([MASKING_KEY_SECRET] if masking_key else []), *extra]


# -- the privacy release service (mesh_platform/deployment/privacy_service.py) ------------------------------------------

PRIVACY = "mesh-privacy"
PRIVACY_PORT = 8080


def privacy_service_url(namespace_: str = PRIVACY) -> str:
    return f"http://{PRIVACY}.{namespace_}.svc.cluster.local:{PRIVACY_PORT}"


def _service_labels(name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mesh"}


def _namespace_and_account(name: str, role_arn_template: str) -> list[dict]:
    """A platform service's own namespace and service account, bound to its IAM role (``mesh-<x>``
    -> the role ``<x>``), with no Kubernetes API token."""
    labels = _service_labels(name)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": name, "labels": labels, "annotations": {ROLE_ANNOTATION: role_arn_template.format(domain=name.removeprefix("mesh-"))}},
         "automountServiceAccountToken": False},
    ]


def _service(name: str, replicas: int, container: dict, ports: dict[str, int], volumes: list[dict] | None = None) -> list[dict]:
    """A platform service's Deployment (its own service account, no Kubernetes API token, non-root)
    running ``container`` (its ``ports`` and a readiness probe on the first added), and its Service."""
    labels = _service_labels(name)
    first = next(iter(ports.values()))
    pod = {"serviceAccountName": name, "automountServiceAccountToken": False, "securityContext": dict(POD_SECURITY_CONTEXT),
           "containers": [{**container, "ports": [{"containerPort": port, "name": n} for n, port in ports.items()],
                           "readinessProbe": {"tcpSocket": {"port": first}}}]}
    if volumes:
        pod["volumes"] = volumes
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": name, "labels": labels},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": name, "labels": labels},
         "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port, "name": n} for n, port in ports.items()]}},
    ]


def _image(image: dict) -> dict:
    return {"image": f"{image['repository']}:{image['tag']}", "imagePullPolicy": image.get("pullPolicy", "IfNotPresent")}


def privacy_manifests(*, image: dict, lake: str, region: str, role_arn_template: str, release_namespace: str) -> list[dict]:
    """The privacy release service: its namespace, service account (the ``mesh-privacy`` IAM role,
    ``infra/iam/mesh-privacy.json``), Deployment, Service, and a NetworkPolicy letting in only the
    mesh's pods (the domains' code servers and runs). Its secrets, created by the operator in its
    namespace: ``mesh-privacy-tokens`` (``tokens.json``: each domain's token -> the domain) and
    ``mesh-privacy-ledger`` (``MESH_PRIVACY_LEDGER``: the ledger's database URL)."""
    labels = _service_labels(PRIVACY)
    container = {
        "name": "privacy-service", **_image(image),
        "command": ["python", "-m", "mesh_platform.deployment.privacy_service", "--host", "0.0.0.0", "--port", str(PRIVACY_PORT),
                    "--tokens", "/var/run/mesh/tokens.json", "--lake", lake],
        "env": [{"name": "MESH_ENV", "value": "production"}, {"name": "AWS_REGION", "value": region}],
        "envFrom": [{"secretRef": {"name": "mesh-privacy-ledger"}}],
        "volumeMounts": [{"name": "tokens", "mountPath": "/var/run/mesh", "readOnly": True}],
    }
    return [
        *_namespace_and_account(PRIVACY, role_arn_template),
        *_service(PRIVACY, 1, container, {"http": PRIVACY_PORT}, [{"name": "tokens", "secret": {"secretName": "mesh-privacy-tokens"}}]),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": PRIVACY, "namespace": PRIVACY, "labels": labels},
         "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"], "ingress": [{"from": [
             {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "mesh"}}},  # the domains' run namespaces
             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": release_namespace}}},  # their code servers
         ]}]}},
    ]


SERVE = "mesh-serve"
SERVE_HTTP_PORT, SERVE_FLIGHT_PORT = 8470, 8471


def serve_manifests(*, image: dict, lake: str, region: str, role_arn_template: str, logs_bucket: str) -> list[dict]:
    """``mesh serve`` beside the Dagster deployment (docs/serving.md): its namespace, service account
    (the ``mesh-serve`` IAM role, ``infra/iam/mesh-serve.json``: read-only on output ports),
    Deployment, and a Service with HTTP and Arrow Flight. Callers outside Dagster reach it; their
    tokens are verified against the identity provider's public keys. The operator creates in its
    namespace: ``mesh-serve-jwks`` (ConfigMap, ``jwks.json``: the public keys), ``mesh-serve-instance``
    (Secret, ``DAGSTER_POSTGRES_URL``: the instance its audit goes to) and
    ``mesh-serve-privacy-tokens`` (Secret, ``privacy-tokens.json``: each domain -> its privacy
    token, with which it asks the privacy service for a caller's aggregates)."""
    container = {
        "name": "serve", **_image(image),
        "command": ["mesh", "serve", "--host", "0.0.0.0", "--http-port", str(SERVE_HTTP_PORT), "--flight-port", str(SERVE_FLIGHT_PORT)],
        "env": [
            {"name": "MESH_ENV", "value": "production"},
            {"name": "AWS_REGION", "value": region},
            {"name": "MESH_LAKE", "value": lake},
            {"name": "MESH_COMPUTE_LOGS_BUCKET", "value": logs_bucket},
            {"name": "MESH_SERVE_JWKS", "value": "/var/run/mesh-jwks/jwks.json"},
            {"name": "MESH_PRIVACY_SERVICE", "value": privacy_service_url()},
            {"name": "MESH_PRIVACY_TOKENS", "value": "/var/run/mesh/privacy-tokens.json"},
        ],
        "envFrom": [{"secretRef": {"name": "mesh-serve-instance"}}],
        "volumeMounts": [{"name": "jwks", "mountPath": "/var/run/mesh-jwks", "readOnly": True},
                         {"name": "privacy-tokens", "mountPath": "/var/run/mesh", "readOnly": True}],
    }
    volumes = [{"name": "jwks", "configMap": {"name": "mesh-serve-jwks"}},
               {"name": "privacy-tokens", "secret": {"secretName": "mesh-serve-privacy-tokens"}}]
    return [*_namespace_and_account(SERVE, role_arn_template),
            *_service(SERVE, 2, container, {"http": SERVE_HTTP_PORT, "flight": SERVE_FLIGHT_PORT}, volumes)]


REPORTS = "mesh-reports"
REPORTS_PORT = 3001


def reports_service_url(namespace_: str = REPORTS) -> str:
    """Where the domains' runs link their quality reports (``MESH_REPORTS_URL``) unless ``mesh helm
    --reports-url`` names the address the operator exposes it at (an Ingress)."""
    return f"http://{REPORTS}.{namespace_}.svc.cluster.local:{REPORTS_PORT}"


def reports_manifests(*, image: dict, lake: str, region: str, role_arn_template: str) -> list[dict]:
    """``mesh reports serve`` beside the Dagster deployment (docs/quality.md): its namespace, service
    account (the ``mesh-reports`` IAM role, ``infra/iam/mesh-reports.json``: the quality reports,
    read only), Deployment and Service. Runs write each report's data only; this service renders
    the Data Docs page when it is first opened, so no run imports Great Expectations."""
    container = {
        "name": "reports", **_image(image),
        "command": ["mesh", "reports", "serve", "--host", "0.0.0.0", "--port", str(REPORTS_PORT)],
        "env": [{"name": "MESH_ENV", "value": "production"}, {"name": "AWS_REGION", "value": region}, {"name": "MESH_LAKE", "value": lake}],
    }
    return [*_namespace_and_account(REPORTS, role_arn_template), *_service(REPORTS, 1, container, {"http": REPORTS_PORT})]


def container_context(domain: str, *, env: Sequence[Mapping[str, Any]], extra_secrets: Sequence[str], resources: Mapping[str, Any], pull_policy: str,
                      masking_key: bool = True) -> dict:
    """The ``k8s`` container context of the domain's code location: what every one of its runs gets."""
    return {
        "k8s": {
            "namespace": namespace(domain),
            "service_account_name": service_account(domain),
            "image_pull_policy": pull_policy,
            "env_secrets": secrets(domain, extra_secrets, masking_key),
            "env": [dict(v) for v in env],
            "labels": {"mesh/domain": domain},
            "resources": dict(resources),
            # a run needs AWS (IRSA's own projected token), not the Kubernetes API: no API token in the pod
            "run_k8s_config": {"pod_spec_config": {"security_context": _snake(POD_SECURITY_CONTEXT), "automount_service_account_token": False}},
        }
    }


def _snake(mapping: Mapping[str, Any]) -> dict:
    """Kubernetes' camelCase keys as the Python client's snake_case (what ``run_k8s_config`` takes)."""
    import re

    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in mapping.items()}


def namespace_manifests(resources: Mapping[str, Mapping[str, Any]], *, role_arn_template: str, release_namespace: str, launcher_service_account: str) -> list[dict]:
    """Per domain (``resources``: each domain's quota resources): its namespace, its runs' service
    account (with its IAM role), a ``LimitRange`` capping every container at the domain's CPU and
    memory limits (a ``dagster-k8s/config`` run tag asking for more is refused by Kubernetes), and the
    right of Dagster's daemon and webserver (``launcher_service_account`` in ``release_namespace``) to
    start, watch and end run Jobs there. The domain's secrets are created there by the operator, never here."""
    documents: list[dict] = []
    for domain, quota in resources.items():
        ns = namespace(domain)
        labels = {"mesh/domain": domain, "app.kubernetes.io/part-of": "mesh"}
        documents += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": service_account(domain), "namespace": ns, "labels": labels, "annotations": {ROLE_ANNOTATION: role_arn(domain, role_arn_template)}},
                "automountServiceAccountToken": False,  # runs need AWS (IRSA's projected token), not the Kubernetes API
            },
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "mesh-quotas", "namespace": ns, "labels": labels},
                "spec": {"limits": [{"type": "Container", "max": dict(quota["limits"]), "default": dict(quota["limits"]), "defaultRequest": dict(quota["requests"])}]},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "mesh-run-launcher", "namespace": ns, "labels": labels},
                "rules": [
                    {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": ["create", "get", "list", "watch", "delete"]},
                    {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/status", "events"], "verbs": ["get", "list", "watch"]},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "mesh-run-launcher", "namespace": ns, "labels": labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mesh-run-launcher"},
                "subjects": [{"kind": "ServiceAccount", "name": launcher_service_account, "namespace": release_namespace}],
            },
        ]
    return documents


# -- rendering a run's Job without a cluster -----------------------------------------------------------------


def deployment_of(values: Mapping[str, Any], domain: str) -> Mapping[str, Any]:
    for deployment in values["dagster-user-deployments"]["deployments"]:
        if deployment.get("labels", {}).get("mesh/domain") == domain:
            return deployment
    raise KeyError(f"no user-code deployment for domain {domain!r} in the Helm values")


def deployment_container_context(deployment: Mapping[str, Any]) -> dict:
    """The container context a deployment's code server reads from its environment at start."""
    for var in deployment.get("env", []):
        if var.get("name") == CONTAINER_CONTEXT_ENV:
            return json.loads(var["value"])
    raise KeyError(f"deployment {deployment.get('name')!r} sets no {CONTAINER_CONTEXT_ENV}")


def render_run_job(values: Mapping[str, Any], domain: str, *, job_name: str | None = None, tags: Mapping[str, str] | None = None) -> dict:
    """The Kubernetes Job (as a plain manifest) the chart's ``K8sRunLauncher`` would create for a run of
    ``domain``: dagster-k8s's own launcher builds it from the run launcher's values, the deployment's
    container context and image, and the run's tags; the Kubernetes API call is captured, not sent.

    ``tags`` defaults to the domain's run tags (``Domain.run_tags()``: what its jobs, schedules,
    sensors and ``mesh materialize`` put on every run)."""
    import tempfile
    from pathlib import Path

    import dagster as dg
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster_k8s import K8sRunLauncher
    from kubernetes.client import ApiClient

    deployment = deployment_of(values, domain)
    launcher_config = (values.get("runLauncher", {}).get("config", {}) or {}).get("k8sRunLauncher", {}) or {}
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    module = deployment["codeServerArgs"][deployment["codeServerArgs"].index("-m") + 1]
    if tags is None:
        from mesh_platform.governance.quotas import run_tags
        from mesh_platform.mesh.workspace import find_workspace

        tags = run_tags(domain, find_workspace().parent / "domains" / domain)

    with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.local_temp(tempdir=tmp) as instance:
        kubeconfig = Path(tmp) / "kubeconfig"  # a cluster that is never contacted: the API call is captured
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "render",
            "clusters": [{"name": "render", "cluster": {"server": "https://127.0.0.1:1"}}],
            "contexts": [{"name": "render", "context": {"cluster": "render", "user": "render", "namespace": "dagster"}}],
            "users": [{"name": "render", "user": {"token": "unused"}}],
        }))
        launcher = K8sRunLauncher(
            instance_config_map="dagster-instance",
            dagster_home="/opt/dagster/dagster_home",
            postgres_password_secret=values.get("global", {}).get("postgresqlSecretName"),
            service_account_name="dagster",
            job_namespace="dagster",
            env_secrets=[s["name"] for s in launcher_config.get("envSecrets", [])],
            load_incluster_config=False,
            kubeconfig_file=str(kubeconfig),
        )
        launcher.register_instance(instance)
        created: list[tuple[Any, str]] = []
        launcher._api_client.create_namespaced_job_with_retries = lambda body, namespace, **_: created.append((body, namespace))  # noqa: SLF001
        origin = JobPythonOrigin(
            job_name or f"{domain}_products",
            RepositoryPythonOrigin(
                executable_path="/usr/local/bin/python",
                code_pointer=ModuleCodePointer(module, "defs", working_directory="/opt/dagster/app"),
                container_image=image,
                container_context=deployment_container_context(deployment),
            ),
        )
        run = create_run_for_test(instance, job_name=origin.job_name, tags=dict(tags), job_code_origin=origin)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    (job, ns), = created
    manifest = ApiClient().sanitize_for_serialization(job)
    manifest.setdefault("metadata", {})["namespace"] = ns
    return manifest


def summarize(manifest: Mapping[str, Any]) -> dict:
    """What a reader checks in a run's Job: namespace, image, service account, resources, secrets, env."""
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env_from = container.get("envFrom", [])
    return {
        "namespace": manifest["metadata"]["namespace"],
        "image": container["image"],
        "service_account": pod.get("serviceAccountName"),
        "resources": container.get("resources", {}),
        "secrets": sorted({e["secretRef"]["name"] for e in env_from if "secretRef" in e}
                          | {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", []) if "secretKeyRef" in (v.get("valueFrom") or {})}),
        "config_maps": sorted(e["configMapRef"]["name"] for e in env_from if "configMapRef" in e),
        "env": sorted(v["name"] for v in container.get("env", [])),
        "labels": manifest["spec"]["template"]["metadata"].get("labels", {}),
    }
