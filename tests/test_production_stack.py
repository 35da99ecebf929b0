"""The production topology on this machine, end to end: `mesh stack up` from a clean MESH_HOME.

Debian's PostgreSQL (the instance), moto's S3 server (lake, landing bucket, compute logs), one
Dagster gRPC code server per domain, `dagster-daemon` and `dagster-webserver` over a gRPC workspace.
Only policies is launched by hand (through GraphQL); everything else is the daemon's doing: the
claims landing sensor on the landing bucket, and the automation conditions of the downstream
domains, evaluated across code locations. Then a new claims batch lands and refreshes the mesh;
then one domain's code server is killed and the four others keep loading and running; then the
stack stops and leaves nothing behind.

Storage is the wall between domains: the S3 server enforces IAM, and each code server holds its own
domain's keys, uid and home. Once the mesh is built, a probe runs with exactly what each code server
holds (`mesh stack matrix`: hostile code that never calls the platform) and every forbidden read and
write must be refused by storage and be in its access log (`mesh audit --storage`); the mesh then
goes on refreshing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TEST_SCALE, run_mesh

from mesh_platform.deployment.stack import layout, postgres, processes, webserver

pytestmark = pytest.mark.slow

DOMAINS = ["policies", "claims", "customer_care", "fraud", "analytics"]
SENSOR = "claims_landing_sensor"
BOUND = 600  # seconds, for each wait below (a loaded 2-core machine needs most of it)


READ_AFTER_REFRESH = ("fraud/fraud_scores", "analytics/claims_weekly")  # ports read from the lake bucket once refreshed


def wait_for(what: str, check, timeout: float = BOUND, every: float = 3.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def settled(web: str):
    """Every run finished (none queued or running): the runs, newest first; else None."""
    try:
        found = webserver.runs(web)
    except layout.StackError as exc:  # a query that failed now (busy machine) is asked again
        return f"no answer: {exc}"[:500]
    if any(r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING") for r in found):
        return None
    return found


def failures(state: dict, runs: list[dict]) -> list[str]:
    """Why each failed run failed, from the instance's event log (Postgres): what an assertion on the
    runs' status should say, so that a failure in CI names its cause."""
    import psycopg2

    failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
    if not failed:
        return []
    con = psycopg2.connect(postgres.libpq_url(state["env"]["DAGSTER_POSTGRES_URL"]))
    try:
        with con.cursor() as cur:
            cur.execute("select run_id, step_key, event from event_logs where run_id = any(%s) and dagster_event_type in "
                        "('STEP_FAILURE', 'PIPELINE_FAILURE') order by id", (failed,))
            rows = cur.fetchall()
    finally:
        con.close()
    found = []
    for run_id, step, event in rows:
        text = str(event)
        at = text.find('"message": "')
        found.append(f"{run_id[:8]} {step or 'run'}: {text[at + 12:at + 3000] if at >= 0 else text[:3000]}")
    return found


def assert_succeeded(state: dict, runs: list[dict]) -> None:
    """Every run succeeded, but for one known race of automation across code locations: a fraud run
    started by its automation sensor before claims had published every day a landing touched fails
    (too few labelled claims, or a port another fraud run is committing) and a later fraud run
    succeeds (docs/production.md, "What drives the mesh"). Anything else failing fails the test,
    naming why."""
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    known = [
        r for r in failed
        if r["location"] == "fraud" and r["tags"].get("dagster/sensor_name") == "fraud_automation"
        and any(o["location"] == "fraud" and o["status"] == "SUCCESS" and (o["startTime"] or 0) > (r["startTime"] or 0) for o in runs)
    ]
    unexplained = [r for r in failed if r not in known]
    assert not unexplained, "\n".join(
        [f"{r['location']} {r['jobName']} {r['status']} tags={r['tags']}" for r in unexplained] + failures(state, unexplained))
    if known:
        print(f"known automation race: {len(known)} fraud run(s) failed, then fraud succeeded:", failures(state, known))


def assert_serve_answers_like_the_platform(env: dict, state: dict) -> None:
    from mesh_platform.serving.client import MeshClient, ServeError

    def token(domain):
        issued = run_mesh(["tokens", "issue", domain], env=env, timeout=60)
        assert issued.returncode == 0, issued.stderr
        return issued.stdout.strip().splitlines()[-1]

    fraud = token("fraud")
    claims = MeshClient(state["env"]["MESH_SERVE_FLIGHT"], fraud).read("claims.claims", columns=["claim_id", "status"])
    assert len(claims) > 0 and list(claims.columns) == ["claim_id", "status"]
    with pytest.raises(ServeError, match="aggregates only"):
        MeshClient(state["env"]["MESH_SERVE_HTTP"], token("analytics")).read("customer_care.conversations")
    with pytest.raises(ServeError, match="403"):
        MeshClient(state["env"]["MESH_SERVE_HTTP"], fraud).read("policies.policyholders")
    # aggregates: through the privacy release service, on analytics' behalf (its token, not serve's keys)
    topics = MeshClient(state["env"]["MESH_SERVE_HTTP"], token("analytics")).aggregate(
        "customer_care.conversations", ["topic"], [{"kind": "count"}], epsilon=0.1)
    assert len(topics) > 0


def stack_home() -> Path:
    """A MESH_HOME outside pytest's temp root: pytest resets that root to 0700 whenever a pytest
    starts on the machine, which would lock out the unprivileged user Postgres runs as (as root)."""
    return Path(tempfile.mkdtemp(prefix="mesh-stack-test-"))


@pytest.fixture(scope="module")
def production():
    home = stack_home()
    env = {
        "MESH_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "MESH_SENSOR_INTERVAL": "5",
        "MESH_AUTOMATION_INTERVAL": "5",
    }
    port = processes.free_port()
    result = run_mesh(["stack", "up", "--port", str(port), "--scale", str(TEST_SCALE)], env=env, timeout=600)
    state_file = home / "stack" / "stack.json"
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads(state_file.read_text())
        yield env, state
    finally:
        saved = json.loads(state_file.read_text()) if state_file.exists() else None
        down = run_mesh(["stack", "down"], env=env, timeout=180)
        if saved is not None:  # whatever happened above, nothing of the stack may be left running
            for p in saved["processes"]:
                if processes.group_alive(p["pid"]):
                    os.killpg(p["pid"], signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def s3_client(state):
    import boto3

    env = state["env"]
    return boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def new_claims_batch(sources: Path) -> tuple[bytes, int]:
    """A fifth batch: the fourth one's claims under new claim numbers (new claims, same shape)."""
    text = (sources / "claims_landing" / "claims_batch_0004.csv").read_text()
    header, *rows = text.strip().splitlines()
    return ("\n".join([header, *(row.replace("CLM-", "CLM-9", 1) for row in rows)]) + "\n").encode(), len(rows)


def assert_disjoint_day_ranges(runs: list[dict]) -> None:
    """Sensor runs of the daily-partitioned claims job: each a range of days, no day in two runs."""
    spans = sorted((r["tags"]["dagster/asset_partition_range_start"], r["tags"]["dagster/asset_partition_range_end"]) for r in runs)
    assert all(a <= b for a, b in spans), spans
    assert all(prev[1] < nxt[0] for prev, nxt in zip(spans, spans[1:])), spans


def test_the_stack_runs_the_mesh_like_production(production):
    env, state = production
    web = state["webserver"]
    project = Path(state["locations"]["policies"]["cwd"])

    # every domain is its own code location, served by its own code server
    statuses = {s.name: s for s in webserver.locations(web, project)}
    assert sorted(statuses) == sorted(DOMAINS) and all(s.loaded for s in statuses.values()), statuses

    # bootstrap: policies through `mesh materialize`, queued on the stack's instance for the policies
    # code server; the sensor starts claims, automation everything downstream
    stack_env = run_mesh(["stack", "env"], env=env, timeout=60)
    assert stack_env.returncode == 0 and "export DAGSTER_POSTGRES_URL=" in stack_env.stdout, stack_env.stderr
    bootstrap = run_mesh(["materialize", "--select", "policies", "--timeout", "600"], env={**env, **state["env"]}, timeout=900)
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    assert "queued (code location policies)" in bootstrap.stdout

    def bootstrapped():
        found = settled(web)
        if not isinstance(found, list):
            return None
        done = {r["location"] for r in found if r["status"] == "SUCCESS"}
        return found if set(DOMAINS) <= done else None

    first = wait_for("the whole mesh to be built by the daemon", bootstrapped)
    assert_succeeded(state, first)
    sensor_runs = [r for r in first if r["tags"].get("dagster/sensor_name") == SENSOR]
    # the landed batches' days, one run per range of days (claims is daily-partitioned), each day once
    assert sensor_runs and all(r["location"] == "claims" for r in sensor_runs)
    assert_disjoint_day_ranges(sensor_runs)
    queued = [r for r in first if r["tags"].get("mesh/launched_by") == "mesh-materialize-queued"]
    assert [r["location"] for r in queued] == ["policies"], [(r["location"], r["tags"]) for r in first]

    # hostile code with exactly what each code server holds: storage refuses all it was not granted
    probed = run_mesh(["stack", "matrix", "--json"], env=env, timeout=600)
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert_matrix_follows_grants(json.loads(probed.stdout), project)
    told = run_mesh(["audit", "--storage", "--consumer", "fraud", "--json"], env=env, timeout=60)
    assert told.returncode == 0, told.stdout + told.stderr
    refused = {(r["method"], r["key"].rsplit("/", 1)[0] + "/") for r in json.loads(told.stdout)["refused"]}
    for method, where in [("GET", "lake/policies/policyholders/v1/"), ("PUT", "lake/policies/policies/v1/"),
                          ("GET", "lake/customer_care/conversations/v1/")]:
        assert any(m == method and k.startswith(where) for m, k in refused), (method, where, sorted(refused)[:20])

    # mesh serve beside the deployment, as its own read-only identity: governed reads for callers outside Dagster
    assert_serve_answers_like_the_platform(env, state)

    # one domain's code server crashes: its location reports the error, the four others load, schedule and run
    victim = "customer_care"
    server = next(p for p in state["processes"] if p["name"] == f"code-server:{victim}")
    os.killpg(server["pid"], signal.SIGKILL)
    # asked at once: status probes each code server (2 s health check), not the webserver's memory of it
    # (which said "up, ok" for a minute); how fast is not asserted here, only that it tells the truth
    told = run_mesh(["stack", "status", "--json"], env=env, timeout=60)
    assert told.returncode == 1, told.stdout + told.stderr
    report = json.loads(told.stdout)
    assert not next(p for p in report["processes"] if p["name"] == f"code-server:{victim}")["alive"]
    assert not next(loc for loc in report["locations"] if loc["name"] == victim)["loaded"]
    assert all(loc["loaded"] for loc in report["locations"] if loc["name"] != victim)
    wait_for("the killed code server to be gone", lambda: not processes.port_open(server["port"]), timeout=30, every=0.5)
    statuses = {s.name: s for s in webserver.locations(web, project, reload=victim)}
    assert not statuses[victim].loaded and statuses[victim].error, statuses[victim]
    assert all(statuses[d].loaded for d in DOMAINS if d != victim), statuses
    schedules = _schedules(web)
    assert schedules.get("policies_sla_schedule") == "RUNNING" and schedules.get("claims_sla_schedule") == "RUNNING"
    # (the other domains' runs: the refresh below runs while customer_care is down)

    # a new batch lands in the landing bucket
    s3 = s3_client(state)
    body, new_claims = new_claims_batch(Path(state["env"]["MESH_SOURCES"]))
    dropped = time.time()
    s3.put_object(Bucket=layout.LANDING_BUCKET, Key="claims/claims_batch_0005.csv", Body=body)

    def refreshed():
        found = settled(web)
        if not isinstance(found, list):
            return None
        after = [r for r in found if r["startTime"] and r["startTime"] > dropped]
        claims_runs = [r for r in after if r["tags"].get("dagster/sensor_name") == SENSOR]
        if not claims_runs:
            return None
        claims_end = max(r["endTime"] for r in claims_runs)
        later = [r for r in after if r["startTime"] > claims_end and r["status"] == "SUCCESS"]
        # automation's refresh of both downstream domains (see docs/production.md on their ordering),
        # down to the ports read below: the fraud scores come after the features and the model
        refreshed_assets = {a for r in later for a in r["assets"]}
        if not {"fraud", "analytics"} <= {r["location"] for r in later} or not set(READ_AFTER_REFRESH) <= refreshed_assets:
            return None
        return after, claims_runs, later

    after, claims_runs, downstream = wait_for("the sensor's claims run, then automation's runs refreshing " + ", ".join(READ_AFTER_REFRESH), refreshed)
    assert claims_runs and all(r["location"] == "claims" for r in claims_runs), claims_runs
    assert_disjoint_day_ranges(claims_runs)
    assert_succeeded(state, after)
    for run in after:  # each run is attached to its code location and launched by the daemon: the landing
        # sensor, automation, or a domain's SLA schedule (hourly; its tick can fall inside this window)
        assert run["location"] in DOMAINS
        launched_by = run["tags"].get("dagster/sensor_name") or run["tags"].get("dagster/schedule_name")
        assert launched_by in (SENSOR, f"{run['location']}_automation", f"{run['location']}_sla_schedule"), run["tags"]
    assert {r["location"] for r in downstream} >= {"fraud", "analytics"}
    assert claims_runs[0]["location"] == "claims"

    # the event log is in Postgres
    import psycopg2

    con = psycopg2.connect(postgres.libpq_url(state["env"]["DAGSTER_POSTGRES_URL"]))
    try:
        with con.cursor() as cur:
            cur.execute("select count(*), count(distinct asset_key) from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'", (claims_runs[0]["runId"],))
            rows, assets = cur.fetchone()
    finally:
        con.close()
    assert rows >= 4 and assets >= 4  # landed claims and events, claims, claim events

    # the published ports are objects in the lake bucket, readable, with the new claims in them
    from deltalake import DeltaTable

    env = state["env"]
    options = {"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL_S3"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": env["AWS_REGION"],
               "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"]}
    claims_port = DeltaTable(f"s3://{layout.LAKE_BUCKET}/lake/claims/claims/v1", storage_options=options).to_pyarrow_table()
    assert sum(str(c).startswith("CLM-9") for c in claims_port.column("claim_id").to_pylist()) == new_claims
    for key in (f"lake/{asset}/v1" for asset in READ_AFTER_REFRESH):
        try:
            assert DeltaTable(f"s3://{layout.LAKE_BUCKET}/{key}", storage_options=options).to_pyarrow_table().num_rows > 0
        except Exception as exc:
            listed = s3.list_objects_v2(Bucket=layout.LAKE_BUCKET, Prefix=f"{key}/_delta_log/")
            runs = [(r["location"], r["jobName"], r["status"], r["tags"].get("dagster/sensor_name")) for r in webserver.runs(web)]
            raise AssertionError(f"{key}: {exc}; log objects: {[o['Key'] for o in listed.get('Contents', [])]}; runs: {runs}") from exc
    logs = s3.list_objects_v2(Bucket=layout.LOGS_BUCKET, Prefix="compute-logs/")
    assert logs.get("KeyCount", 0) > 0  # compute logs went to S3 too

    # the run linked its quality report to the reports service, which renders it (the run imported no GX)
    from dagster._core.events.log import EventLogEntry
    from dagster._serdes import deserialize_value

    con = psycopg2.connect(postgres.libpq_url(state["env"]["DAGSTER_POSTGRES_URL"]))
    try:
        with con.cursor() as cur:
            cur.execute("select event from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION' and asset_key = %s",
                        (claims_runs[0]["runId"], json.dumps(["claims", "claims"])))
            entry = deserialize_value(cur.fetchone()[0], EventLogEntry)
    finally:
        con.close()
    link = entry.asset_materialization.metadata["mesh/quality_report"].value
    assert link.startswith(env["MESH_REPORTS_URL"] + "/claims/claims/_quality/") and link.endswith(".html"), link
    assert not [o["Key"] for o in s3.list_objects_v2(Bucket=layout.LAKE_BUCKET, Prefix="lake/claims/claims/_quality/").get("Contents", [])
                if o["Key"].endswith(".html")]  # nothing rendered by the run
    with urllib.request.urlopen(link, timeout=120) as page:
        assert page.status == 200 and "claims.claims" in page.read().decode()

    # no second claims run for the same keys, however many sensor ticks pass
    time.sleep(12)
    every = [r for r in webserver.runs(web) if r["tags"].get("dagster/sensor_name") == SENSOR]
    # the bootstrap's day ranges and the new batch's, nothing else; each tick's runs share its files' key
    assert sorted(r["runId"] for r in every) == sorted(r["runId"] for r in sensor_runs + claims_runs), [(r["runId"], r["tags"]) for r in every]
    new_keys = {r["tags"]["mesh/landed_keys_sha"] for r in claims_runs}
    assert len(new_keys) == 1 and not new_keys & {r["tags"]["mesh/landed_keys_sha"] for r in sensor_runs}

    # restarting it brings it back
    result = run_mesh(["stack", "restart", victim], env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(s.loaded for s in webserver.locations(web, project))

    # stopping leaves no process and no port
    state = json.loads((Path(env["MESH_HOME"]) / "stack" / "stack.json").read_text())
    down = run_mesh(["stack", "down"], env=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p["name"] for p in state["processes"] if processes.group_alive(p["pid"])]
    ports = [p["port"] for p in state["processes"] if p.get("port")] + [state["postgres"]["port"]]
    assert not [port for port in ports if processes.port_open(port)]
    assert not (Path(state["postgres"]["pgdata"]) / "postmaster.pid").exists()


def assert_matrix_follows_grants(matrix: dict, project: Path) -> None:
    """Each domain reads its own prefixes and the ports infra/iam grants it, writes only its own, reads
    only its own landing prefix, writes step logs it cannot read back; it reaches none of the other
    identities' keys nor the other domains' run forkservers (as root, where each runs as its own
    user); only analytics gets a privacy release."""
    assert sorted(matrix) == sorted(DOMAINS)
    names = {r["target"] for r in matrix["fraud"]["storage"]}
    assert {"policies/policyholders/v1", "claims/_private", "customer_care/conversations/v1", "landing/claims", "step logs"} <= names, names
    for domain, found in matrix.items():
        policy = json.loads((project / "infra" / "iam" / f"{domain}.json").read_text())
        granted = {r.split("/lake/", 1)[1].removesuffix("/*") for st in policy["Statement"] if st["Sid"] == "ReadGrantedPorts" for r in st["Resource"]}
        for r in found["storage"]:
            target = r["target"]
            owner = target.split("/")[1] if target.startswith("landing/") else target.split("/")[0]
            if target == "step logs":
                expected = (False, True)
            elif target.startswith("landing/"):
                expected = (owner == domain, False)
            else:
                expected = (owner == domain or target in granted, owner == domain)
            if r["read_key"] is None:  # nothing there to read: only the write is measured
                expected, got = expected[1], r["write"]
            else:
                got = (r["read"], r["write"])
            assert got == expected, (domain, r)
        if os.geteuid() == 0:
            assert not [f["path"] for f in found["files"] if f["readable"]], (domain, found["files"])
            # the other domains' run forkservers (each forks processes with its domain's identity)
            assert len(found["sockets"]) == len(matrix) - 1, (domain, found["sockets"])
            assert not [s["path"] for s in found["sockets"] if s["connected"]], (domain, found["sockets"])
        released = {p["token"]: p["released"] for p in found["privacy"]}
        assert released == {"own token": domain == "analytics", "forged token": False}, (domain, found["privacy"])
    for domain in DOMAINS:  # the aggregate-only product: its producer alone (and the privacy service)
        row = next(r for r in matrix[domain]["storage"] if r["target"] == "customer_care/conversations/v1")
        assert row["read"] == (domain == "customer_care"), (domain, row)


SCHEDULES_QUERY = """
query {
  workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { ... on RepositoryLocation {
    repositories { schedules { name scheduleState { status } } }
  } } } } }
}
"""


def _schedules(web: str) -> dict[str, str]:
    data = webserver.graphql(web, SCHEDULES_QUERY)["workspaceOrError"]["locationEntries"]
    return {
        s["name"]: s["scheduleState"]["status"]
        for entry in data if entry["locationOrLoadError"]
        for repo in entry["locationOrLoadError"].get("repositories", [])
        for s in repo["schedules"]
    }


def test_a_domain_that_fails_to_import_is_named_and_the_others_load(domains_copy, tmp_path):
    """`mesh stack up` with one broken domain: one message naming the domain and its file; the rest runs."""
    from conftest import copy_env

    definitions = domains_copy / "domains" / "fraud" / "definitions.py"
    definitions.write_text("import not_a_module_of_this_mesh  # a missing dependency\n" + definitions.read_text())
    workspace = domains_copy / "workspace.yaml"
    entries = yaml.safe_load(workspace.read_text())["load_from"]
    workspace.write_text(yaml.safe_dump({"load_from": [e for e in entries if e["python_module"]["location_name"] in ("policies", "fraud")]}))
    home = stack_home()
    env = {**copy_env(domains_copy), "MESH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    port = processes.free_port()
    try:
        result = run_mesh(["stack", "up", "--port", str(port), "--scale", "0.1", "--no-automation"], env=env, cwd=domains_copy, timeout=600)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "fraud: FAILED to load: ModuleNotFoundError: No module named 'not_a_module_of_this_mesh'" in result.stderr
        assert "(domains/fraud/definitions.py, line 1)" in result.stderr
        assert "policies: loaded" in result.stdout and "1 of 2 domain(s) loaded" in result.stdout
        state = json.loads((home / "stack" / "stack.json").read_text())
        assert all(processes.group_alive(p["pid"]) for p in state["processes"])  # nothing else stopped
    finally:
        down = run_mesh(["stack", "down"], env=env, cwd=domains_copy, timeout=180)
        shutil.rmtree(home, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
