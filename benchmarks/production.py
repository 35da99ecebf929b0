"""production: the mesh on its production instance (Postgres) and in the local production stack.

Two measurements:

- ``run overhead``: the same small Dagster run (five assets in a chain, each with metadata: what a
  domain's run records) executed in process against a SQLite instance (**baseline**, the embedded
  default) and against a Postgres instance (``infra/dagster.yaml``'s storage, Debian's PostgreSQL
  on loopback, started for the benchmark). Median wall time per run; the ratio is the cost of the
  production event log per run.
- ``landing -> analytics`` (full runs only): ``mesh stack up`` at scale 1 from a fresh MESH_HOME,
  the mesh built by the daemon (policies launched, the rest by the landing sensor and automation),
  then one new claims batch dropped into the landing bucket; reported is the time from that PUT to
  the end of the last of automation's fraud and analytics runs that followed the sensor's claims
  run, with its parts (sensor pick-up, claims run, automation pick-up, fraud run, analytics run).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, RunConfig, run_command, run_isolated
from benchmarks.results import BenchmarkResult, Case

NAME = "production"
DESCRIPTION = "Postgres instance vs SQLite per run; claims landing to analytics refreshed in `mesh stack up`"
FULL_RUNS = (2, 15)  # warm-up, timed runs per storage
QUICK_RUNS = (1, 3)
QUICK_SECONDS = 15


def skip_reason() -> str | None:
    from mesh_platform.deployment.stack.layout import StackError
    from mesh_platform.deployment.stack.postgres import postgres_bin

    try:
        postgres_bin()
    except StackError as exc:
        return str(exc)
    return None


# -- run overhead (child process) -------------------------------------------------------------------


def run_overhead(storage: str, postgres_url: str | None, warmup: int, repeats: int) -> dict[str, Any]:
    import dagster as dg

    from benchmarks.harness import time_repeated

    @dg.asset
    def a1() -> int:
        return 1

    previous = a1
    chain = [a1]
    for i in range(2, 6):

        @dg.asset(name=f"a{i}", ins={"upstream": dg.AssetIn(previous.key)})
        def _step(context, upstream: int) -> int:
            context.add_output_metadata({"rows": upstream + 1, "note": "x" * 200})
            return upstream + 1

        chain.append(_step)
        previous = _step
    job = dg.Definitions(assets=chain).resolve_implicit_global_asset_job_def()
    home = tempfile.mkdtemp(prefix="bench-instance-")
    try:
        if storage == "postgres":
            Path(home, "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {postgres_url}\ntelemetry:\n  enabled: false\n")
        else:
            Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(home) as instance:
            samples = time_repeated(lambda: job.execute_in_process(instance=instance), repeats=repeats, warmup=warmup)
            events = len(instance.all_logs(instance.get_runs(limit=1)[0].run_id))
        return {"wall": samples.wall, "cpu": samples.cpu, "events_per_run": events}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _postgres(tmp: Path):
    from mesh_platform.deployment.stack.layout import StackLayout, StackState
    from mesh_platform.deployment.stack.postgres import start_postgres

    layout = StackLayout(tmp / "stack")
    state = StackState()
    url = start_postgres(layout, state, progress=lambda _m: None)
    return url, state


# -- landing -> analytics -------------------------------------------------------------------------


def _settled(web: str):
    from mesh_platform.deployment.stack import webserver

    found = webserver.runs(web)
    if any(r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING") for r in found):
        return None
    return found


def _chain(found: list[dict], after: float) -> dict | None:
    """claims (sensor) -> fraud and analytics (automation), all succeeded, started after ``after``."""
    claims = [r for r in found if r["location"] == "claims" and r["tags"].get("dagster/sensor_name") and r["startTime"] > after and r["status"] == "SUCCESS"]
    if not claims:
        return None
    c = min(claims, key=lambda r: r["startTime"])
    fraud = [r for r in found if r["location"] == "fraud" and r["status"] == "SUCCESS" and r["startTime"] > c["endTime"]]
    if not fraud:
        return None
    f = min(fraud, key=lambda r: r["startTime"])
    analytics = [r for r in found if r["location"] == "analytics" and r["status"] == "SUCCESS" and r["startTime"] > c["endTime"]]
    if not analytics:
        return None
    a = max(analytics, key=lambda r: r["endTime"])
    return {"claims": c, "fraud": f, "analytics": a}


def wait_for(check, timeout: float = 1200.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise TimeoutError(f"not reached within {timeout:.0f} s")


def landing_to_analytics(scale: float = 1.0) -> dict[str, Any]:
    import boto3

    from mesh_platform.deployment.stack import layout, processes, webserver

    home = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    env = {"MESH_HOME": str(home), "DAGSTER_HOME": None, "MESH_LAKE": None, "MESH_SOURCES": None,
           "MESH_SENSOR_INTERVAL": "5", "MESH_AUTOMATION_INTERVAL": "5"}
    cli = [sys.executable, "-m", "mesh_platform.cli"]
    port = processes.free_port()
    try:
        up = run_command([*cli, "stack", "up", "--port", str(port), "--scale", f"{scale:g}"], env=env, cwd=ROOT, timeout=900)
        import json

        state = json.loads((home / "stack" / "stack.json").read_text())
        web = state["webserver"]
        started = time.time()
        webserver.launch(web, "policies", "policies_products")
        wait_for(lambda: (lambda f: f and _chain(f, started))(_settled(web)))
        bootstrap_s = time.time() - started
        sources = Path(state["env"]["MESH_SOURCES"]) / "claims_landing"
        header, *rows = (sources / "claims_batch_0004.csv").read_text().strip().splitlines()
        body = "\n".join([header, *(r.replace("CLM-", "CLM-9", 1) for r in rows)]) + "\n"
        e = state["env"]
        s3 = boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL_S3"], region_name=e["AWS_REGION"],
                          aws_access_key_id=e["AWS_ACCESS_KEY_ID"], aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])
        dropped = time.time()
        s3.put_object(Bucket=layout.LANDING_BUCKET, Key="claims/claims_batch_0005.csv", Body=body.encode())
        chain = wait_for(lambda: (lambda f: f and _chain(f, dropped))(_settled(web)))
        c, f, a = chain["claims"], chain["fraud"], chain["analytics"]
        return {
            "landing_to_analytics_s": round(max(a["endTime"], f["endTime"]) - dropped, 2),
            "sensor_pickup_s": round(c["startTime"] - dropped, 2),
            "claims_run_s": round(c["endTime"] - c["startTime"], 2),
            "fraud_run_s": round(f["endTime"] - f["startTime"], 2),
            "analytics_run_s": round(a["endTime"] - a["startTime"], 2),
            "automation_pickup_s": round(min(f["startTime"], a["startTime"]) - c["endTime"], 2),
            "stack_up_s": up["wall_s"],
            "bootstrap_s": round(bootstrap_s, 2),
            "claims_rows_landed": len(rows),
        }
    finally:
        run_command([*cli, "stack", "down"], env=env, cwd=ROOT, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def run(config: RunConfig) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="the same run on a SQLite instance")
    warmup, repeats = QUICK_RUNS if config.quick else FULL_RUNS
    tmp = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    size = "5-asset run"
    try:
        from mesh_platform.deployment.stack.postgres import stop_postgres

        url, state = _postgres(tmp)
        try:
            for storage in ("sqlite", "postgres"):
                config.log(f"  {NAME}: run overhead on {storage} ({warmup} warm-up + {repeats} runs)")
                measured = run_isolated("benchmarks.production:run_overhead", {"storage": storage, "postgres_url": url, "warmup": warmup, "repeats": repeats})
                result.cases.append(Case(
                    f"{storage} instance", size, round(statistics.median(measured["wall"]), 4),
                    None if storage == "sqlite" else "sqlite instance",
                    cpu_seconds=round(statistics.median(measured["cpu"]), 4), peak_rss_mb=measured["peak_rss_mb"],
                    details={"samples_s": measured["wall"], "events_per_run": measured["events_per_run"]},
                ))
        finally:
            stop_postgres(state.postgres)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not config.quick:
        config.log(f"  {NAME}: claims batch landing -> analytics refreshed in `mesh stack up` (scale 1)")
        measured = run_isolated("benchmarks.production:landing_to_analytics", {"scale": 1.0}, timeout=3600)
        result.cases.append(Case("landing -> analytics (stack)", "scale 1", measured["landing_to_analytics_s"], None,
                                 peak_rss_mb=measured.get("peak_rss_mb"), details=measured))
    else:
        result.notes.append("landing -> analytics in the stack runs only in full runs (it starts the whole stack)")
    result.add_ratios()
    return result
