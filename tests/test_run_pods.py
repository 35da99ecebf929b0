"""Each domain's runs on Kubernetes, rendered by dagster-k8s's own launcher (no cluster).

The committed Helm values (infra/helm/values.yaml) give every domain's code location a container
context; the chart's K8sRunLauncher turns it, the image and the run's tags into a Job. These tests
render that Job for every domain with ``K8sRunLauncher.launch_run`` (the Kubernetes API call is
captured, not sent) and check image, namespace, service account, resources and secrets, and that no
other domain's secret, service account or role appears. A run tag that names another domain's service
account or secret (domain code chooses its runs' tags) cannot leave the domain's namespace, where
neither exists.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import ROOT

from mesh_platform.deployment import helm, run_pods
from mesh_platform.deployment.helm import quota_resources
from mesh_platform.governance.quotas import run_tags
from mesh_platform.mesh.workspace import read_workspace

VALUES = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
NAMESPACES = [d for d in yaml.safe_load_all((ROOT / "infra" / "helm" / "run-namespaces.yaml").read_text()) if d]
DOMAINS = [entry.location for entry in read_workspace(ROOT / "workspace.yaml")]
EXTRA_SECRETS = {"policies": {"mesh-policy-admin-db"}}  # what domains/policies/domain.yaml references (one key, by env)
PSEUDONYMIZES = {"policies"}  # policyholders' pii: the only domain that needs the masking key


def _names_of(domain: str) -> set[str]:
    """Every Kubernetes name that belongs to ``domain`` alone."""
    return {run_pods.aws_secret(domain), run_pods.privacy_token_secret(domain), run_pods.service_account(domain), run_pods.namespace(domain), run_pods.role_arn(domain)}


@pytest.fixture(scope="module")
def jobs() -> dict[str, dict]:
    return {domain: run_pods.render_run_job(VALUES, domain, tags=run_tags(domain, ROOT / "domains" / domain)) for domain in DOMAINS}


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domains_run_is_its_own_pod(jobs, domain):
    job = jobs[domain]
    summary = run_pods.summarize(job)
    deployment = run_pods.deployment_of(VALUES, domain)
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    assert summary["image"] == f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert summary["namespace"] == f"mesh-{domain.replace('_', '-')}"
    assert summary["service_account"] == f"mesh-{domain.replace('_', '-')}"
    assert summary["resources"] == quota_resources(domain, ROOT / "domains" / domain)
    masking = {"mesh-masking-key"} if domain in PSEUDONYMIZES else set()
    assert set(summary["secrets"]) == {f"mesh-{domain.replace('_', '-')}-aws", f"mesh-{domain.replace('_', '-')}-privacy-token", "dagster-postgresql-secret"} | masking | EXTRA_SECRETS.get(domain, set())
    assert summary["labels"]["mesh/domain"] == domain
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False  # the run needs AWS, not the Kubernetes API
    env = {v["name"]: v.get("value") for v in pod["containers"][0]["env"]}
    assert env["MESH_ENV"] == "production" and env["MESH_LAKE"].startswith("s3://")


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_other_domains_secret_account_or_role_appears_in_a_run(jobs, domain):
    text = json.dumps(jobs[domain])
    for other in DOMAINS:
        if other == domain:
            continue
        leaked = sorted(name for name in _names_of(other) if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text))
        assert not leaked, f"{domain}'s run names {other}'s {leaked}"


def test_the_deployment_runs_the_code_server_as_the_domains_own_service_account_and_role():
    for deployment in VALUES["dagster-user-deployments"]["deployments"]:
        domain = deployment["labels"]["mesh/domain"]
        account = deployment["serviceAccount"]
        assert account["name"] == run_pods.service_account(domain)
        assert account["annotations"][run_pods.ROLE_ANNOTATION].endswith(f":role/mesh-{domain.replace('_', '-')}")
        assert (ROOT / "infra" / "iam" / f"{domain}.json").exists()  # the policy that role is bound to
        spec = helm.deployment_of(ROOT / "domains" / domain / "domain.yaml")[1]
        assert [s["name"] for s in deployment["envSecrets"]] == run_pods.secrets(domain, spec.secrets, domain in PSEUDONYMIZES)
        # the chart's own context would hand runs the chart-wide service account: it is off
        assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    assert "envSecrets" not in VALUES["runLauncher"]["config"]["k8sRunLauncher"]  # nothing every domain's runs share


def test_only_a_domain_that_pseudonymizes_holds_the_masking_key(tmp_path):
    """A domain holding the key could hash a list of names or emails and undo the pseudonyms others
    publish: consumers of masked ports never get it; a producer of pii gets it once it has a contract
    that pseudonymizes (here: fraud declaring a pii column)."""
    import shutil

    from mesh_platform.governance.masking import needs_key

    assert {d for d in DOMAINS if "mesh-masking-key" in run_pods.deployment_container_context(run_pods.deployment_of(VALUES, d))["k8s"]["env_secrets"]} == PSEUDONYMIZES
    project = tmp_path / "project"
    shutil.copytree(ROOT / "domains", project / "domains", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "workspace.yaml", project / "workspace.yaml")
    contract = project / "domains" / "fraud" / "contracts" / "fraud_scores.yaml"
    text = contract.read_text()
    assert "classification: confidential" in text or "classification: internal" in text
    contract.write_text(text.replace("classification: internal", "classification: pii", 1))
    from mesh_platform.contracts.loader import load_contract

    assert needs_key([load_contract(contract)])
    assert helm.pseudonymizes(project / "domains" / "fraud") and not helm.pseudonymizes(ROOT / "domains" / "fraud")


def test_run_namespaces_hold_each_domains_account_in_its_own_namespace_only():
    accounts = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in NAMESPACES if d["kind"] == "ServiceAccount"]
    assert sorted(accounts) == sorted((run_pods.namespace(d), run_pods.service_account(d)) for d in DOMAINS)
    assert not [d for d in NAMESPACES if d["kind"] == "Secret"], "secrets are created by the operator, never generated"
    for domain in DOMAINS:
        limit = next(d for d in NAMESPACES if d["kind"] == "LimitRange" and d["metadata"]["namespace"] == run_pods.namespace(domain))
        assert limit["spec"]["limits"][0]["max"] == quota_resources(domain, ROOT / "domains" / domain)["limits"]
        binding = next(d for d in NAMESPACES if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == run_pods.namespace(domain))
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dagster", "namespace": "dagster"}]


def test_a_run_tag_naming_another_domains_identity_stays_in_its_own_namespace():
    """fraud's code requests a run tagged with policies' service account, secret and more CPU than its quota."""
    hostile = {
        **run_tags("fraud", ROOT / "domains" / "fraud"),
        "dagster-k8s/config": json.dumps({
            "pod_spec_config": {"service_account_name": "mesh-policies"},
            "container_config": {"env_from": [{"secret_ref": {"name": "mesh-policies-aws"}}], "resources": {"limits": {"cpu": "64"}}},
        }),
    }
    job = run_pods.render_run_job(VALUES, "fraud", tags=hostile)
    assert job["metadata"]["namespace"] == "mesh-fraud"  # the deployment's context decides it; no tag can
    # Kubernetes resolves both names in mesh-fraud, where neither exists: the API server refuses the pod
    in_fraud = {(d["kind"], d["metadata"]["name"]) for d in NAMESPACES if d["metadata"].get("namespace") == "mesh-fraud"}
    assert ("ServiceAccount", "mesh-policies") not in in_fraud and ("ServiceAccount", "mesh-fraud") in in_fraud
    # and the namespace's LimitRange caps the container at fraud's quota, below the 64 CPUs asked for
    limit = next(d for d in NAMESPACES if d["kind"] == "LimitRange" and d["metadata"]["namespace"] == "mesh-fraud")
    assert limit["spec"]["limits"][0]["max"]["cpu"] == quota_resources("fraud", ROOT / "domains" / "fraud")["limits"]["cpu"] != "64"


def test_mesh_helm_show_runs_prints_each_domains_run_pod():
    from conftest import run_mesh

    result = run_mesh(["helm", "--show-runs"])
    assert result.returncode == 0, result.stdout + result.stderr
    for domain in DOMAINS:
        assert f"{domain}:\n  namespace        mesh-{domain.replace('_', '-')}" in result.stdout
    assert "service account  mesh-fraud" in result.stdout and "secrets          dagster-postgresql-secret, mesh-fraud-aws, mesh-fraud-privacy-token\n" in result.stdout
