"""Production configuration (infra/) and the production code paths that run without the whole stack.

- infra/helm/values.yaml is what `mesh helm` generates (kept in sync like infra/iam), it agrees
  with infra/dagster.yaml, and it never holds a secret's value.
- infra/dagster.yaml is a valid Dagster instance configuration and runs on a real Postgres.
- The landing zone on S3 (moto server, loopback): the sensor lists it through dagster-aws, never
  asks twice for the same keys, and skips the keys a run it did not start already read.
- Bad input: Postgres unreachable, missing S3 credentials, a missing bucket: one clear message.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from conftest import ROOT, copy_env, run_mesh

from mesh_platform.sources import s3 as mesh_s3
from mesh_platform.sources.landing_sensor import landing_zone_sensor, record_landed
from mesh_platform.sources.systems import LandingZone


def test_helm_values_are_generated_from_the_workspace_and_up_to_date(tmp_path):
    out = tmp_path / "values.yaml"
    result = run_mesh(["helm", "--out", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text() == (ROOT / "infra" / "helm" / "values.yaml").read_text(), "run `mesh helm` (infra/helm/values.yaml is out of date)"
    namespaces = tmp_path / "run-namespaces.yaml"
    assert namespaces.read_text() == (ROOT / "infra" / "helm" / "run-namespaces.yaml").read_text(), "run `mesh helm` (infra/helm/run-namespaces.yaml is out of date)"
    privacy = tmp_path / "privacy-service.yaml"
    assert privacy.read_text() == (ROOT / "infra" / "helm" / "privacy-service.yaml").read_text(), "run `mesh helm` (infra/helm/privacy-service.yaml is out of date)"
    serve = tmp_path / "serve.yaml"
    assert serve.read_text() == (ROOT / "infra" / "helm" / "serve.yaml").read_text(), "run `mesh helm` (infra/helm/serve.yaml is out of date)"


def test_mesh_serve_runs_as_its_own_read_only_identity():
    """docs/serving.md: `mesh serve` has its own namespace and IAM role, read-only on the output ports
    and on nothing else; it verifies tokens against mounted public keys and audits into the instance."""
    import json

    documents = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "infra" / "helm" / "serve.yaml").read_text())}
    assert documents["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/mesh-serve")
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and not pod["automountServiceAccountToken"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["mesh", "serve"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MESH_SERVE_JWKS"] == "/var/run/mesh-jwks/jwks.json" and env["MESH_LAKE"].startswith("s3://")
    assert {"secretRef": {"name": "mesh-serve-instance"}} in container["envFrom"]
    assert {p["name"] for p in documents["Service"]["spec"]["ports"]} == {"http", "flight"}
    policy = json.loads((ROOT / "infra" / "iam" / "mesh-serve.json").read_text())
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}  # read only
    resources = [r for statement in policy["Statement"] if statement["Sid"] == "ReadOutputPorts" for r in statement["Resource"]]
    assert "arn:aws:s3:::acme-mesh-lake/lake/claims/claims/v1/*" in resources
    assert "arn:aws:s3:::acme-mesh-lake/lake/policies/policyholders/v1_masked/*" in resources
    assert not any("_private" in r or "quarantine" in r or "landing" in r for r in resources)


def test_the_privacy_service_runs_as_its_own_identity_reachable_only_from_the_mesh():
    """Aggregate-only products are read by the privacy service alone, on Kubernetes too: its own
    namespace and IAM role, its tokens and ledger from its own secrets, in-cluster callers of the
    mesh only; every domain's pods and runs know where it is and hold their own token only."""
    documents = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "infra" / "helm" / "privacy-service.yaml").read_text())}
    account = documents["ServiceAccount"]
    assert account["metadata"]["namespace"] == "mesh-privacy"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/mesh-privacy")
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mesh-privacy" and pod["securityContext"]["runAsNonRoot"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["python", "-m", "mesh_platform.deployment.privacy_service"]
    assert {"secretRef": {"name": "mesh-privacy-ledger"}} in container["envFrom"]
    assert pod["volumes"] == [{"name": "tokens", "secret": {"secretName": "mesh-privacy-tokens"}}]
    allowed = documents["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "mesh"}}} in allowed
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    for deployment in values["dagster-user-deployments"]["deployments"]:
        domain = deployment["labels"]["mesh/domain"]
        env = {e["name"]: e.get("value") for e in deployment["env"]}
        assert env["MESH_PRIVACY_SERVICE"] == "http://mesh-privacy.mesh-privacy.svc.cluster.local:8080"
        tokens = [s["name"] for s in deployment["envSecrets"] if s["name"].endswith("-privacy-token")]
        assert tokens == [f"mesh-{domain.replace('_', '-')}-privacy-token"], tokens


def test_helm_values_have_one_deployment_per_domain_and_agree_with_the_instance():
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load((ROOT / "infra" / "dagster.yaml").read_text())
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    deployments = values["dagster-user-deployments"]["deployments"]
    assert [d["codeServerArgs"] for d in deployments] == [
        ["-m", e["python_module"]["module_name"], "--location-name", e["python_module"]["location_name"]] for e in workspace
    ]
    for d in deployments:
        domain = d["labels"]["mesh/domain"]
        assert {"name": f"mesh-{domain.replace('_', '-')}-aws"} in d["envSecrets"]
        assert d["resources"]["requests"] and d["podSecurityContext"]["runAsNonRoot"]
        for var in d["env"]:  # a value is plain configuration; anything secret comes from a secret
            assert "valueFrom" in var or not any(w in var["name"] for w in ("SECRET", "PASSWORD", "TOKEN")), var
    policies = next(d for d in deployments if d["labels"]["mesh/domain"] == "policies")
    assert {"name": "POLICY_ADMIN_DB_URL", "valueFrom": {"secretKeyRef": {"name": "mesh-policy-admin-db", "key": "url"}}} in policies["env"]
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["maxConcurrentRuns"] == instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queue["dequeueIntervalSeconds"] == instance["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1  # one hop of a change waits in the queue at most a second
    assert values["computeLogManager"]["type"] == instance["compute_logs"]["class"] == "S3ComputeLogManager"
    assert values["telemetry"]["enabled"] is False and instance["telemetry"]["enabled"] is False
    assert values["postgresql"]["enabled"] is False
    assert {instance[k]["config"]["postgres_url"]["env"] for k in ("run_storage", "event_log_storage", "schedule_storage")} == {"DAGSTER_POSTGRES_URL"}


def test_a_secret_value_in_a_domain_descriptor_is_refused(domains_copy, tmp_path):
    descriptor = domains_copy / "domains" / "claims" / "domain.yaml"
    descriptor.write_text(descriptor.read_text() + "    AWS_SECRET_ACCESS_KEY: hunter2\n")
    out = tmp_path / "values.yaml"
    result = run_mesh(["helm", "--workspace", str(domains_copy / "workspace.yaml"), "--out", str(out)], env=copy_env(domains_copy))
    assert result.returncode == 1
    assert "domains/claims/domain.yaml" in result.stderr and "deployment.env.AWS_SECRET_ACCESS_KEY" in result.stderr
    assert "hunter2" not in result.stderr and not out.exists()


def test_instance_file_is_valid_and_the_image_is_pinned_and_non_root(monkeypatch, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://mesh@127.0.0.1:5432/dagster")
    monkeypatch.setenv("MESH_COMPUTE_LOGS_BUCKET", "mesh-logs")
    shutil.copy(ROOT / "infra" / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    for key in ("run_storage", "event_log_storage", "schedule_storage"):  # Dagster's Postgres storages, pooled (tests/test_instance_storage.py)
        assert config[key]["module"] == "mesh_platform.deployment.instance_storage", key
        assert config[key]["config"]["postgres_url"] == {"env": "DAGSTER_POSTGRES_URL"}
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    base = next(line for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert ":" in base and "latest" not in base and base.split(":")[1][0].isdigit()
    assert "USER 10001" in dockerfile and "mesh dbt prepare" in dockerfile


# -- the landing zone on S3 ---------------------------------------------------------------------


@pytest.fixture
def landing(s3_server, monkeypatch):
    for key, value in s3_server.admin.env(s3_server.endpoint).items():
        monkeypatch.setenv(key, value)
    bucket = f"landing-{time.time_ns()}"
    s3_server.client().create_bucket(Bucket=bucket)
    return s3_server, bucket


def _reader_defs(zone: LandingZone):
    """A domain-like location: an asset reading the landing zone (recording what it read), its job, its sensor."""

    @dg.asset(key=["claims", "landed_claims"], required_resource_keys={"landing"})
    def landed_claims(context):
        files = context.resources.landing.landed("claims_*.csv")
        record_landed(context, files)
        return sum(len(f.open().read()) for f in files)

    job = dg.define_asset_job("claims_products", selection=[landed_claims])
    sensor = landing_zone_sensor(name="claims_landing_sensor", job=job, landing=zone, patterns=["claims_*.csv"], readers=[["claims", "landed_claims"]],
                                settle_seconds=0)
    return landed_claims, sensor


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_the_sensor_never_runs_twice_on_the_same_keys(backend, landing, tmp_path):
    server, bucket = landing
    if backend == "s3":
        zone = LandingZone(path=f"s3://{bucket}/claims")

        def drop(name):
            server.client().put_object(Bucket=bucket, Key=f"claims/{name}", Body=b"claim_ref\nCLM-1\n")
    else:
        zone = LandingZone(path=str(tmp_path / "landing"))
        (tmp_path / "landing").mkdir()

        def drop(name):
            (tmp_path / "landing" / name).write_text("claim_ref\nCLM-1\n")

    asset, sensor = _reader_defs(zone)
    with dg.instance_for_test() as instance:
        drop("claims_batch_0001.csv")
        drop("notes.txt")  # not a claims file
        ctx = dg.build_sensor_context(instance=instance)
        first = sensor(ctx)
        assert isinstance(first, dg.RunRequest) and first.tags["mesh/landed_files"] == "1"
        assert json.loads(ctx.cursor) == ["claims_batch_0001.csv"]
        assert "no new files" in sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor)).skip_message

        # a run the sensor did not start (`mesh materialize`, the UI) reads a new batch ...
        drop("claims_batch_0002.csv")
        result = dg.materialize([asset], instance=instance, resources={"landing": zone})
        assert result.success
        mat = instance.get_latest_materialization_event(dg.AssetKey(["claims", "landed_claims"])).asset_materialization
        assert mat.metadata["mesh/landed_files"].value == ["claims_batch_0001.csv", "claims_batch_0002.csv"]
        # ... so the sensor does not run the domain again on it: it would be newer than its consumers' inputs
        ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        assert "no new files" in sensor(ctx2).skip_message
        assert json.loads(ctx2.cursor) == ["claims_batch_0001.csv", "claims_batch_0002.csv"]

        # a batch nobody read yet starts exactly one run
        drop("claims_batch_0003.csv")
        third = sensor(ctx2)
        assert isinstance(third, dg.RunRequest) and third.tags["mesh/landed_files"] == "1" and third.run_key != first.run_key
        assert "no new files" in sensor(dg.build_sensor_context(instance=instance, cursor=ctx2.cursor)).skip_message


def test_a_complete_batch_on_s3_runs_without_waiting_and_an_incomplete_one_waits(landing, tmp_path):
    """A batch is one file per pattern, named alike. On S3 an object is listed once its upload is
    complete, so a batch with all its files runs on the first tick that sees it; one still missing a
    file waits the settle time, then runs on what it has. A local folder always waits."""
    server, bucket = landing
    job = dg.define_asset_job("claims_products", selection=dg.AssetSelection.all())
    patterns = ["claims_*.csv", "claim_events_*.jsonl"]

    def sensor_for(zone):
        return landing_zone_sensor(name="s", job=job, landing=zone, patterns=patterns, settle_seconds=60, complete_batches=True)

    def put(name):
        server.client().put_object(Bucket=bucket, Key=f"claims/{name}", Body=b"x\n")

    sensor = sensor_for(LandingZone(path=f"s3://{bucket}/claims"))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        put("claims_batch_0001.csv")
        assert "1 new file(s) still landing" in sensor(ctx).skip_message  # its events are not there yet
        put("claim_events_batch_0002.jsonl")  # another batch's events: batch 1 is still incomplete
        assert "2 new file(s) still landing" in sensor(ctx).skip_message
        put("claim_events_batch_0001.jsonl")
        assert "still landing" in sensor(ctx).skip_message  # batch 2 has no claims file yet
        put("claims_batch_0002.csv")
        request = sensor(ctx)  # both complete: at once, well within the settle time
        assert isinstance(request, dg.RunRequest) and request.tags["mesh/landed_files"] == "4"

    local = tmp_path / "landing"
    local.mkdir()
    for name in ("claims_batch_0001.csv", "claim_events_batch_0001.jsonl"):
        (local / name).write_text("x\n")
    with dg.instance_for_test() as instance:
        assert "2 new file(s) still landing" in sensor_for(LandingZone(path=str(local)))(dg.build_sensor_context(instance=instance)).skip_message

    with pytest.raises(ValueError, match="exactly one"):
        landing_zone_sensor(name="s", job=job, landing=LandingZone(path=str(local)), patterns=["claims_*_*.csv"], complete_batches=True)


def test_the_sensor_waits_while_a_run_is_reading_the_landing_zone(tmp_path):
    (tmp_path / "claims_batch_0001.csv").write_text("claim_ref\nCLM-1\n")
    asset, sensor = _reader_defs(LandingZone(path=str(tmp_path)))
    job = dg.Definitions(assets=[asset], jobs=[dg.define_asset_job("claims_products", selection=[asset])], resources={"landing": LandingZone(path=str(tmp_path))}).resolve_job_def("claims_products")
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job, asset_selection=frozenset({dg.AssetKey(["claims", "landed_claims"])}), status=dg.DagsterRunStatus.STARTED)
        result = sensor(dg.build_sensor_context(instance=instance))
        assert "waiting for run(s) already reading the landing zone" in result.skip_message and run.run_id[:8] in result.skip_message
        instance.report_run_failed(run)
        assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.RunRequest)


def test_missing_bucket_and_missing_credentials_are_named(landing, monkeypatch):
    server, bucket = landing
    with pytest.raises(mesh_s3.S3Error, match=r"landing zone s3://no-such-bucket/claims: bucket 'no-such-bucket' does not exist"):
        LandingZone(path="s3://no-such-bucket/claims").landed("claims_*.csv")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(mesh_s3.S3Error, match=rf"s3://{bucket}/claims: no S3 credentials to read bucket '{bucket}'"):
        LandingZone(path=f"s3://{bucket}/claims").landed("claims_*.csv")


def test_an_unreachable_postgres_is_named_and_nothing_starts(tmp_path):
    url = "postgresql+psycopg2://mesh:s3cret@127.0.0.1:9/dagster"
    env = {"MESH_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster_home")}
    result = run_mesh(["stack", "up", "--postgres-url", url, "--port", "1", "--scale", "0.1"], env=env, timeout=300)
    assert result.returncode == 1
    assert "Postgres at postgresql+psycopg2://mesh:***@127.0.0.1:9/dagster (DAGSTER_POSTGRES_URL) is unreachable" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    state = tmp_path / "home" / "stack" / "stack.json"
    assert not state.exists() or not json.loads(state.read_text())["processes"]


def test_the_stack_suggests_a_mesh_command_that_works_without_an_activated_environment(monkeypatch, tmp_path):
    """`mesh stack up` ends with `eval "$(... stack env)"`: with the environment not activated, plain
    `mesh` is not on PATH, so the suggestion names this environment's `mesh` by its path."""
    import shlex
    import sys

    from mesh_platform.cli.stack import mesh_command, up_hints

    here = Path(sys.executable).parent / "mesh"
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert mesh_command() == (str(here) if here.exists() else f"{sys.executable} -m mesh_platform.cli")
    # every command `mesh stack up` suggests names it so
    said = up_hints("http://127.0.0.1:3000", 5, ["fraud"])
    expected = mesh_command()
    assert said[0] == (f"stack up: http://127.0.0.1:3000  (4 of 5 domain(s) loaded); stop it with `{expected} stack down`", False)
    assert f'eval "$({expected} stack env)"' in said[1][0] and f"`{expected} materialize -s policies`" in said[1][0]
    assert said[2] == (f"the other domains run; fix fraud and `{expected} stack restart fraud`", True)
    monkeypatch.setenv("PATH", f"{here.parent}:/usr/bin:/bin")
    assert mesh_command() == ("mesh" if here.exists() else f"{sys.executable} -m mesh_platform.cli")
    assert "stop it with `mesh stack down`" in up_hints("http://127.0.0.1:3000", 5, [])[0][0] or not here.exists()
    # started as a `mesh` elsewhere (another environment, a path with a space): that one, absolute and quoted
    other = tmp_path / "my env" / "bin" / "mesh"
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(other)])
    assert mesh_command() == shlex.quote(str(other))
