"""freshness: a compressed day of claims landings in the production stack, as Dagster's daemon runs it.

Per scale, in a fresh process and a fresh temp ``MESH_HOME``:

1. ``mesh stack up --scale S`` (Postgres instance, S3 with IAM, one code server per domain, daemon,
   webserver) with ``MESH_SENSOR_INTERVAL=5`` and ``MESH_AUTOMATION_INTERVAL=5`` (production's 30 s
   would add up to 25 s of waiting per hop; the figures measure the mesh, not the tick). GX quality
   reports stay on (production's default; ``MESH_QUALITY_REPORTS`` is not set).
2. Bootstrap as ``tests/test_production_stack.py`` does: ``mesh materialize --select policies``, then
   the daemon builds the rest (the landing sensor over the simulated batches, automation
   downstream). Built = no run queued or running, every domain has a successful run, and no run
   launched for :data:`QUIET` seconds. Then :data:`IDLE` seconds with nothing landing: the idle
   stack's CPU (sensors and automation ticking, servers idle), the baseline of the CPU figure.
3. The day: :data:`BATCHES` landings (3 with ``--quick``), one every :data:`INTERVAL` seconds (45 s
   with ``--quick``), each shifted within one sensor tick so that the batches meet the ticks at
   every phase, as landings at random moments would (:func:`make_batches`). A landing is what the
   simulated claims system drops (``mesh simulate``): one claims CSV and one claim-events JSON-lines file, ``claims_batch_01NN.csv`` and
   ``claim_events_batch_01NN.jsonl``, PUT to the landing bucket together (two threads) with the
   stack's admin keys. Each batch holds new claims (claim numbers ``CLM-7BBNNNN``, never seen
   before) cloned from the last simulated batch (same policies, types and amounts; status open),
   reported at the landing's time, so they fall on today's partition (today's date in UTC), plus
   one ``opened`` event per claim at that time. A batch has as many claims as the simulation
   reports per day on average (at least 5). Both files carry the batch: a claims CSV alone would
   leave the day's events unchanged, and rebuilding claim events for that day would be redundant
   by the benchmark's doing, not the platform's.

   **Why 120 s.** It is a day of 12 hourly landings compressed 30 times, and it sits between the
   targets and what this machine showed before: 4x the scale-1 target (30 s) and 1.3x the scale-100
   target (90 s), so a mesh that meets its targets has settled before the next batch lands and
   each batch's runs are its own; ``benchmarks/results/production.md`` measured 110 s from a
   landing to analytics at scale 1 on this (shared) machine, so a mesh that misses them here has
   the next batch land while the previous one is still being refreshed. That is recorded, not
   avoided: the landing sensor then takes the waiting files together (counted as *coalesced*), and
   latency is still measured per batch. The interval is fixed (it does not adapt to the mesh).
4. After the last landing: wait until no run is queued or running and none was launched for
   :data:`QUIET` seconds (bounded by :data:`SETTLE_TIMEOUT`), then read everything back and
   ``mesh stack down`` (always, in a ``finally``; every wait is a loop with a deadline).

**What is read, from where.** Runs (status, times, tags, code location) from the stack webserver's
GraphQL; materializations (asset, partition, run, timestamp, and the landed files the assets reading
the landing zone record in ``mesh/landed_files``) from the instance's event log in Postgres (SQL on
``event_logs``, as ``tests/test_production_stack.py`` reads it); the asset graph with its partition
mappings from the domains' definitions (what the runs read; loaded in a separate process).

**Definitions.** Each materialization *M* of an asset partition (asset, day or none) in run *R*:

- *What M read*: the materializations of its inputs (per the partition mapping: the same day, a
  window of days, every day; any materialization of an unpartitioned input or for an
  unpartitioned asset) made earlier in *R*, or by other runs before *R* started.
- *Newest batch* ``nb(M)``: for the assets reading the landing zone (``claims/landed_*``), the
  highest batch whose file *M* records having read; otherwise the highest ``nb`` among what *M*
  read (0: nothing of the day's batches).
- *Batch carried* ``nb_all(M)``: the batch *M* carries through **every** input the day's batches
  flow through (the landing zone's assets and the products downstream of it; fraud's model,
  retrained on its own schedule, is not one): the lowest, over those inputs, of the highest
  ``nb_all`` read from each. ``fraud_hit_rate`` built from batch 5's claims and batch 4's scores
  carries batch 4: it has not yet caught up with batch 5's scores.
- **Latency** of product *P* for batch *b*: from the end of the batch's PUTs to the first
  materialization of *P* with ``nb_all >= b`` (for a daily-partitioned product, of each day the
  batch touches; the latest of them). A product refreshed only by a later batch's runs gets that later
  time; a product never refreshed within the wait counts as not refreshed (infinite: a p95 over it
  is reported as missing). **landing -> every product refreshed** is the largest latency over the
  products downstream of the landing zone (``claims/claims``, ``claims/claim_events``, fraud's
  ``claim_features`` and ``fraud_scores``, analytics' marts reading claims or fraud; customer_care
  reads nothing of claims and is not among them); products never built during the bootstrap (the
  scores at small scales, where the model has too few labels) are left out and named in a note.
  p50 is the median over batches, p95 the nearest rank (of 12 batches: the slowest).
- **Runs per batch**: runs launched (created) from the first landing to the end of the day, divided
  by the number of batches; each run is attributed to the batch of its materializations' highest
  ``nb`` (a run with no materialization: to the last batch landed before it was created), listed
  per batch with domain and trigger. The target compares it with the domains the landing affects
  (claims, fraud, analytics): at most one run per affected domain and batch.
- **Failed runs**: runs of the day that ended FAILURE or CANCELED, with the step failure's message
  from the event log. Failures during the bootstrap are reported apart.
- **Redundant runs**: runs of the day with (a) a materialization that brought nothing new: its
  asset partition was materialized before, and since that previous materialization no input
  brought anything (for ``claims/landed_*``: no file it read is new; otherwise every input
  materialization it read that the previous one had not read was itself redundant, so a rebuild on
  unchanged data is redundant all the way down), or (b) an asset partition that another run of the
  day had already materialized with the same newest batch (two runs over the same asset and days
  for one batch, with nothing newer through any input; the later run is counted). The first materialization of an asset partition is
  never redundant. Assets fed by other sources (policies, customer_care's export) are not judged
  (nothing tells when their sources changed); they do not run during the day unless a daily
  schedule fires.
- **CPU s per batch**: CPU time (user + system) of every process of the stack, sampled from
  ``/proc/<pid>/stat`` every :data:`SAMPLE_EVERY` seconds: the processes of ``stack.json`` (S3,
  privacy service, mesh serve, one code server per domain, daemon, webserver), Postgres's
  postmaster (from its ``postmaster.pid``), and all their descendants (run workers, Postgres
  backends), counting the CPU of children they reaped (``cutime``/``cstime``). Dagster records no
  per-run CPU. From the first landing to the end of the day's last run, divided by the batches;
  the *idle stack* case is the same stack's CPU over one interval with nothing landing. Peak RSS
  is the largest sum of the stack's resident sets at a sample (shared pages counted per process).

Targets (issue "Each change refreshed once, correctly, in seconds"): p95 <= 30 s at scale 1 and
<= 90 s at scale 100; runs per batch <= affected domains; 0 failed runs; 0 redundant runs (the last
two only in full runs: a quick run's three batches are a smoke test).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, CaseFailed, RunConfig, run_command, run_isolated
from benchmarks.results import BenchmarkResult, Case, Target

NAME = "freshness"
DESCRIPTION = ("a compressed day of claims landings in `mesh stack up`: landing -> every downstream product refreshed "
               "(p50/p95), runs, failed and redundant runs, stack CPU per batch")
SCALES = (1.0, 100.0)
QUICK_SCALE = 0.2
BATCHES, QUICK_BATCHES = 12, 3
INTERVAL, QUICK_INTERVAL = 120.0, 45.0
IDLE, QUICK_IDLE = 60.0, 20.0
TICK = "5"  # MESH_SENSOR_INTERVAL and MESH_AUTOMATION_INTERVAL, seconds
QUIET = 60.0  # settled: nothing queued or running, and nothing launched for this long (12 automation ticks)
SAMPLE_EVERY = 2.0
SETUP_TIMEOUT = 1800.0  # stack up + bootstrap; past it the scale is reported as not set up
SETTLE_TIMEOUT = 900.0
QUICK_SECONDS = 900  # the quick run starts a stack: run it first
TARGET_P95 = {1.0: 30.0, 100.0: 90.0}
LANDED = {"claims/landed_claims": "claims_", "claims/landed_claim_events": "claim_events_"}  # asset -> its files' prefix
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
FAILED = ("FAILURE", "CANCELED")


def skip_reason() -> str | None:
    """The production benchmark's: the stack needs PostgreSQL's server binaries."""
    from benchmarks.production import skip_reason as needs_postgres

    return needs_postgres()


# -- the asset graph, as the runs read it (a child process: it imports every domain) -------------------


def mesh_graph() -> dict[str, Any]:
    """Every materializable asset of the mesh: partitioned or not, its inputs and their partition mappings."""
    import warnings

    from benchmarks.whole_mesh import mesh_env

    home = tempfile.mkdtemp(prefix="bench-fresh-graph-")
    try:
        for key, value in mesh_env(home).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import dagster as dg

        from mesh_platform.cli.common import prepare_dbt
        from mesh_platform.mesh.workspace import Mesh

        warnings.simplefilter("ignore")
        prepare_dbt(ROOT / "workspace.yaml")  # what every mesh command does first (a fresh checkout has no dbt manifest)
        graph: dict[str, Any] = {}
        for loaded in Mesh.load(ROOT / "workspace.yaml").domains:
            if loaded.defs is None:
                raise RuntimeError(f"domain {loaded.entry.location} does not load: {'; '.join(map(str, loaded.problems))}")
            asset_graph = loaded.defs.resolve_asset_graph()
            for key in asset_graph.materializable_asset_keys:
                node = asset_graph.get(key)
                parents = []
                for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
                    mapping = node.partition_mappings.get(parent)
                    kind, low, high = type(mapping).__name__ if mapping is not None else None, None, None
                    if isinstance(mapping, dg.TimeWindowPartitionMapping):
                        low, high = mapping.start_offset, mapping.end_offset
                    parents.append([parent.to_user_string(), kind, low, high])
                graph[key.to_user_string()] = {"partitioned": node.partitions_def is not None, "parents": parents}
        return graph
    finally:
        shutil.rmtree(home, ignore_errors=True)


def downstream_products(graph: dict[str, Any], roots: list[str]) -> list[str]:
    """The products (assets with a contract in their domain) downstream of ``roots``."""
    children: dict[str, set[str]] = defaultdict(set)
    for asset, node in graph.items():
        for parent, *_ in node["parents"]:
            children[parent].add(asset)
    seen, todo = set(), list(roots)
    while todo:
        for child in children[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    products = []
    for asset in sorted(seen):
        domain, _, name = asset.partition("/")
        if (ROOT / "domains" / domain / "contracts" / f"{name}.yaml").exists():
            products.append(asset)
    return products


# -- CPU and memory of the stack's processes ------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, int, int, int, int]]:
    """pid -> (ppid, process group, own CPU ticks, reaped children's CPU ticks, RSS pages)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]), int(fields[21]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def cpu_sample(roots: dict[str, int]) -> dict[str, Any]:
    """CPU seconds so far and resident MiB of each root process with its group and descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, row in table.items():
        children[row[0]].append(pid)
    taken: set[int] = set()
    per = {}
    for name, root in roots.items():
        todo = [pid for pid, row in table.items() if pid == root or row[1] == root]
        members: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in members or pid in taken:
                continue
            members.add(pid)
            todo.extend(children.get(pid, ()))
        taken |= members
        per[name] = (sum(table[p][2] + table[p][3] for p in members) / _CLK, sum(table[p][4] for p in members) * _PAGE / 2**20)
    return {"t": time.time(), "cpu": {k: v[0] for k, v in per.items()}, "rss_mb": sum(v[1] for v in per.values())}


class Sampler:
    """Samples :func:`cpu_sample` every ``every`` seconds in a thread."""

    def __init__(self, roots: dict[str, int], every: float = SAMPLE_EVERY):
        self.roots, self.every, self.samples = roots, every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(cpu_sample(self.roots))
            self._stop.wait(self.every)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.samples.append(cpu_sample(self.roots))


def cpu_at(samples: list[dict], t: float) -> dict[str, float]:
    """Each root's CPU seconds at time ``t``, interpolated between the samples around it."""
    before = [s for s in samples if s["t"] <= t]
    after = [s for s in samples if s["t"] >= t]
    if not before:
        return dict(samples[0]["cpu"])
    if not after:
        return dict(samples[-1]["cpu"])
    a, b = before[-1], after[0]
    if b["t"] == a["t"]:
        return dict(a["cpu"])
    w = (t - a["t"]) / (b["t"] - a["t"])
    return {k: a["cpu"].get(k, 0.0) + w * (b["cpu"].get(k, 0.0) - a["cpu"].get(k, 0.0)) for k in a["cpu"]}


def cpu_between(samples: list[dict], t0: float, t1: float) -> tuple[float, dict[str, float]]:
    a, b = cpu_at(samples, t0), cpu_at(samples, t1)
    per = {k: round(max(0.0, b.get(k, 0.0) - a.get(k, 0.0)), 3) for k in a}
    return round(sum(per.values()), 3), per


# -- the stack -------------------------------------------------------------------------------------------

RUNS_QUERY = """
query {
  runsOrError(limit: 20000) {
    ... on Runs { results {
      runId status jobName creationTime startTime endTime
      tags { key value }
      repositoryOrigin { repositoryLocationName }
    } }
  }
}
"""


def stack_runs(web: str) -> list[dict]:
    from mesh_platform.deployment.stack import webserver

    found = webserver.graphql(web, RUNS_QUERY, timeout=120)["runsOrError"]["results"]
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        run["location"] = (run.get("repositoryOrigin") or {}).get("repositoryLocationName")
        run.pop("repositoryOrigin", None)
    return found


def _connect(url: str):
    import psycopg2

    from mesh_platform.deployment.stack.postgres import libpq_url

    return psycopg2.connect(libpq_url(url), connect_timeout=10)


def sql_runs(url: str) -> list[tuple[str, str, float]]:
    """(run id, status, creation time) of every run, from the instance's run storage."""
    con = _connect(url)
    try:
        with con.cursor() as cur:
            cur.execute("select run_id, status, extract(epoch from create_timestamp)::float8 from runs")
            return cur.fetchall()
    finally:
        con.close()


def materializations(url: str) -> list[dict]:
    """Every asset materialization in the event log: id, run, asset, partition, time; landed files where recorded."""
    from dagster._core.events.log import EventLogEntry
    from dagster._serdes import deserialize_value

    from mesh_platform.foundations.metadata import LANDED_FILES

    con = _connect(url)
    try:
        with con.cursor() as cur:
            cur.execute(
                "select id, run_id, asset_key, partition, extract(epoch from timestamp)::float8, "
                "case when asset_key = any(%s) then event end from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION' order by id",
                ([json.dumps(k.split("/")) for k in LANDED],),
            )
            rows = cur.fetchall()
    finally:
        con.close()
    found = []
    for event_id, run_id, key, partition, ts, body in rows:
        item = {"id": event_id, "run": run_id, "asset": "/".join(json.loads(key)), "partition": partition, "ts": ts}
        if body is not None:
            entry = deserialize_value(body, EventLogEntry)
            value = entry.asset_materialization.metadata.get(LANDED_FILES) if entry.asset_materialization else None
            item["files"] = sorted(value.value) if value is not None and isinstance(value.value, list) else None
        found.append(item)
    return found


PHASE_EVENTS = ("PIPELINE_STARTING", "PIPELINE_START", "STEP_START", "STEP_SUCCESS", "PIPELINE_SUCCESS", "PIPELINE_FAILURE")


def run_events(url: str, run_ids: list[str]) -> dict[str, list[tuple[str, str | None, float]]]:
    """(event type, step, time) of each run's launch, start, steps and end, from the event log."""
    if not run_ids:
        return {}
    con = _connect(url)
    try:
        with con.cursor() as cur:
            cur.execute("select run_id, dagster_event_type, step_key, extract(epoch from timestamp)::float8 from event_logs "
                        "where run_id = any(%s) and dagster_event_type = any(%s) order by id", (run_ids, list(PHASE_EVENTS)))
            rows = cur.fetchall()
    finally:
        con.close()
    found: dict[str, list[tuple[str, str | None, float]]] = defaultdict(list)
    for run_id, kind, step, ts in rows:
        found[run_id].append((kind, step, ts))
    return dict(found)


def run_phases(runs: list[dict], events: dict[str, list[tuple[str, str | None, float]]], mats: list[dict],
               landings: list[float] = ()) -> dict[str, Any]:
    """Where a hop's time goes, per domain (medians over the day's successful runs, seconds):

    - *trigger*: from the newest materialization of another domain the run read (made before the
      run was created; for the landing sensor's runs, from the landing) to the run's creation: the
      sensor or automation tick and its evaluation;
    - *queue*: creation -> the run launched (``RUN_STARTING``): the daemon's dequeue;
    - *launch*: launched -> ``RUN_START``: a fresh process loads the domain's code;
    - *to first step*: ``RUN_START`` -> the first ``STEP_START``;
    - *steps*: first ``STEP_START`` -> last step's end, and each step's own median;
    - *end*: the last step's end -> ``RUN_SUCCESS``.
    """
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        evs = events.get(run["runId"]) or []
        kinds = {k: t for k, _, t in evs if k not in ("STEP_START", "STEP_SUCCESS")}
        if run["status"] != "SUCCESS" or "PIPELINE_START" not in kinds or "PIPELINE_STARTING" not in kinds:
            continue
        domain, created = run["location"], run["creationTime"]
        if run["tags"].get("dagster/sensor_name") == "claims_landing_sensor":
            upstream = [t for t in landings if t <= created]
        else:
            upstream = [m["ts"] for m in mats if m["ts"] <= created and not m["asset"].startswith(f"{domain}/") and m["ts"] >= created - 120]
        if upstream:
            per[domain]["trigger"].append(created - max(upstream))
        per[domain]["queue"].append(kinds["PIPELINE_STARTING"] - created)
        per[domain]["launch"].append(kinds["PIPELINE_START"] - kinds["PIPELINE_STARTING"])
        starts = {s: t for k, s, t in evs if k == "STEP_START"}
        ends = {s: t for k, s, t in evs if k == "STEP_SUCCESS"}
        if starts and ends:
            per[domain]["to first step"].append(min(starts.values()) - kinds["PIPELINE_START"])
            per[domain]["steps"].append(max(ends.values()) - min(starts.values()))
            if "PIPELINE_SUCCESS" in kinds:
                per[domain]["end"].append(kinds["PIPELINE_SUCCESS"] - max(ends.values()))
            for step, t in starts.items():
                if step in ends:
                    steps[domain][step].append(ends[step] - t)
    return {d: {**{k: round(statistics.median(v), 2) for k, v in phases.items()},
                "per step": {s: round(statistics.median(v), 2) for s, v in sorted(steps[d].items())}}
            for d, phases in sorted(per.items())}


def failure_messages(url: str, run_ids: list[str]) -> dict[str, list[str]]:
    """The step and run failure messages of ``run_ids``, from the event log."""
    if not run_ids:
        return {}
    con = _connect(url)
    try:
        with con.cursor() as cur:
            cur.execute("select run_id, step_key, event from event_logs where run_id = any(%s) and dagster_event_type in "
                        "('STEP_FAILURE', 'PIPELINE_FAILURE', 'RUN_FAILURE') order by id", (run_ids,))
            rows = cur.fetchall()
    finally:
        con.close()
    found: dict[str, list[str]] = defaultdict(list)
    for run_id, step, event in rows:
        try:
            entry = json.loads(event)
            data = (entry.get("dagster_event") or {}).get("event_specific_data") or {}
            error = data.get("error") or {}
            cause = error.get("cause") or {}
            text = " ".join((error.get("message") or entry.get("user_message") or "").split())
            if cause.get("message"):
                text += " | cause: " + " ".join(cause["message"].split())
        except ValueError:
            text = event[:400]
        found[run_id].append(f"{step or 'run'}: {text[:500]}")
    return dict(found)


# -- the landings ----------------------------------------------------------------------------------------


def make_batches(sources: Path, count: int, first_at: float, interval: float, spread: float = 0.0) -> tuple[list[dict], dict[str, Any]]:
    """``count`` batches (claims CSV and events JSON lines, as bytes), the i-th reported at its landing time.

    ``spread`` (the sensors' tick, seconds): the landings' offsets within it, one of ``count`` evenly
    spaced phases each, in a fixed shuffled order. An interval that is a multiple of the tick lands
    every batch at the same phase of the sensors' ticks; at 6555bf0 that phase was just after a
    tick, and every batch waited 4.6-5.1 s for the landing sensor where a landing at a random moment
    waits 2.5 s on average."""
    import datetime as dt

    import pandas as pd

    folder = sources / "claims_landing"
    simulated = sorted(folder.glob("claims_batch_*.csv"))
    claims = pd.concat([pd.read_csv(p, dtype=str) for p in simulated], ignore_index=True)
    per_day = len(claims) / max(1, pd.to_datetime(claims["reported_at"]).dt.strftime("%Y-%m-%d").nunique())
    rows = max(5, math.ceil(per_day))
    template = pd.read_csv(simulated[-1], dtype=str)
    events = [pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("claim_events_batch_*.jsonl"))]
    first_event = int(max(int(e["event_no"].max()) for e in events if len(e))) + 1_000_000
    delays = (pd.to_datetime(template["reported_at"]).dt.normalize() - pd.to_datetime(template["incident_date"])).dt.days.clip(0, 60)
    batches = []
    for i in range(1, count + 1):
        planned_at = first_at + (i - 1) * interval + spread * (((i - 1) * 5) % count) / count  # 5: prime to 12, every phase once
        at = dt.datetime.fromtimestamp(planned_at, tz=dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        pick = [(i * rows + j) % len(template) for j in range(rows)]
        batch = template.iloc[pick].reset_index(drop=True).copy()
        refs = [f"CLM-7{i:02d}{j:04d}" for j in range(rows)]
        batch["claim_ref"] = refs
        batch["reported_at"] = at.strftime("%Y-%m-%dT%H:%M:%S")
        batch["incident_date"] = [(at - dt.timedelta(days=int(d))).strftime("%Y-%m-%d") for d in delays.iloc[pick]]
        batch["status"] = "open"
        batch["settled_at"] = ""
        batch["amount_paid"] = "0.0"
        lines = [json.dumps({"claim_ref": ref, "event": "opened", "at": at.strftime("%Y-%m-%dT%H:%M:%S"), "event_no": first_event + (i - 1) * rows + j})
                 for j, ref in enumerate(refs)]
        number = 100 + i
        batches.append({
            "index": i,
            "planned_at": planned_at,
            "days": [at.strftime("%Y-%m-%d")],
            "claims": len(batch),
            "files": {f"claims_batch_{number:04d}.csv": batch.to_csv(index=False).encode(),
                      f"claim_events_batch_{number:04d}.jsonl": ("\n".join(lines) + "\n").encode()},
        })
    return batches, {"claims_per_batch": rows, "simulated_claims": len(claims), "simulated_claims_per_day": round(per_day, 2)}


def land(s3, bucket: str, files: dict[str, bytes]) -> tuple[float, float]:
    """PUT every file at once (one thread each); (start, end) of the PUTs."""
    errors = []

    def put(name: str, body: bytes) -> None:
        try:
            s3.put_object(Bucket=bucket, Key=f"claims/{name}", Body=body)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=item) for item in files.items()]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    ended = time.time()
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"landing failed: {errors or 'a PUT did not finish within 120 s'}")
    return started, ended


# -- analysis (pure: from what the stack recorded) ----------------------------------------------------------


def _day_offset(q: str, p: str) -> int:
    import datetime as dt

    return (dt.date.fromisoformat(q) - dt.date.fromisoformat(p)).days


def _relevant(q: str | None, p: str | None, kind: str | None, low: int | None, high: int | None) -> bool:
    """Whether the input's partition ``q`` is read by the partition ``p`` of the asset."""
    if p is None or q is None or kind == "AllPartitionMapping":
        return True
    if low is not None and high is not None:
        return low <= _day_offset(q, p) <= high
    return q == p


def _pct(values: list[float | None], q: float) -> float | None:
    """Nearest-rank percentile; a missing value (never refreshed) counts as infinitely late."""
    ranked = sorted(math.inf if v is None else v for v in values)
    if not ranked:
        return None
    value = ranked[max(1, math.ceil(q * len(ranked))) - 1]
    return None if math.isinf(value) else round(value, 2)


def _median(values: list[float | None]) -> float | None:
    ranked = [math.inf if v is None else v for v in values]
    if not ranked:
        return None
    value = statistics.median(ranked)
    return None if math.isinf(value) else round(value, 2)


def trigger(run: dict) -> str:
    tags = run["tags"]
    return tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name") or tags.get("mesh/trigger") or tags.get("mesh/launched_by") or "other"


def analyse(raw: dict) -> dict[str, Any]:
    """Latencies, runs, failed and redundant runs of the day (see the module docstring)."""
    runs = {r["runId"]: r for r in raw["runs"]}
    graph, batches, expected = raw["graph"], raw["batches"], raw["expected"]
    day_start, day_end = raw["day_start"], raw["day_end"]
    file_batch = {name: b["index"] for b in batches for name in b["files"]}

    def started(run_id: str) -> float:
        run = runs.get(run_id) or {}
        return run.get("startTime") or run.get("creationTime") or 0.0

    def visible(u: dict, run_id: str, before_id: int, run_start: float) -> bool:
        return u["id"] < before_id if u["run"] == run_id else u["ts"] < run_start

    carriers = set(LANDED) | set(expected) | set(raw.get("carriers", ()))  # the assets each batch flows through
    mats = sorted(raw["mats"], key=lambda m: m["id"])
    by_asset: dict[str, list[dict]] = defaultdict(list)
    previous: dict[tuple, dict] = {}
    for m in mats:
        asset, part, run_id = m["asset"], m["partition"], m["run"]
        start = started(run_id)
        prev = previous.get((asset, part))
        m["why"] = None
        m["nb_all"] = 0
        if asset in LANDED:
            files = m.get("files")
            if files is None:  # not recorded: judge by time
                m["nb"] = max((b["index"] for b in batches if b["landed_at"] < start and (part is None or part in b["days"])), default=0)
                m["redundant"] = False
            else:
                m["nb"] = max((file_batch[f] for f in files if f in file_batch), default=0)
                m["redundant"] = prev is not None and prev.get("files") is not None and set(files) <= set(prev["files"])
                if m["redundant"]:
                    m["why"] = "no new landed file on its day"
            m["nb_all"] = m["nb"]
        elif not graph.get(asset, {}).get("parents"):
            m["nb"], m["redundant"] = 0, False
        else:
            read = [u for parent, kind, low, high in graph[asset]["parents"] for u in by_asset.get(parent, ())
                    if _relevant(u["partition"], part, kind, low, high) and visible(u, run_id, m["id"], start)]
            m["nb"] = max((u["nb"] for u in read), default=0)
            paths = {parent for parent, *_ in graph[asset]["parents"] if parent in carriers}
            m["nb_all"] = min((max((u["nb_all"] for u in read if u["asset"] == parent), default=0) for parent in paths), default=0)
            if prev is None:
                m["redundant"] = False
            else:
                prev_start = started(prev["run"])
                new = [u for u in read if not visible(u, prev["run"], prev["id"], prev_start)]
                m["redundant"] = all(u["redundant"] for u in new)
                if m["redundant"]:
                    m["why"] = "inputs unchanged since its last build" if not new else "its new inputs were themselves rebuilt on unchanged data"
        by_asset[asset].append(m)
        previous[(asset, part)] = m

    day_runs = sorted((r for r in runs.values() if r["creationTime"] >= day_start), key=lambda r: r["creationTime"])
    day_ids = {r["runId"] for r in day_runs}
    mats_of: dict[str, list[dict]] = defaultdict(list)
    for m in mats:
        mats_of[m["run"]].append(m)

    # (b) the same asset partition again for the same batch
    first_for: dict[tuple, str] = {}
    duplicate: dict[str, list[str]] = defaultdict(list)
    for m in mats:
        if m["run"] not in day_ids or not m["nb"]:
            continue
        key = (m["asset"], m["partition"], m["nb"], m["nb_all"])
        if key not in first_for:
            first_for[key] = m["run"]
        elif first_for[key] != m["run"]:
            duplicate[m["run"]].append(f"{m['asset']}[{m['partition'] or '-'}] again for batch {m['nb']} (first: run {first_for[key][:8]})")

    def spans(items: list[dict]) -> str:
        grouped: dict[str, list[str]] = defaultdict(list)
        for m in items:
            grouped[m["asset"]].append(m["partition"] or "-")
        return "; ".join(f"{a}[{min(p)}..{max(p)}, {len(p)} day(s)]" if len(p) > 1 else f"{a}[{p[0]}]" for a, p in grouped.items())

    redundant_runs = []
    for run in day_runs:
        nothing_new = [m for m in mats_of[run["runId"]] if m["redundant"]]
        again = duplicate.get(run["runId"], [])
        if nothing_new or again:
            reasons = []
            if nothing_new:
                whys = sorted({m["why"] for m in nothing_new if m["why"]})
                reasons.append(f"nothing new: {spans(nothing_new)} ({'; '.join(whys)})")
            if again:
                reasons.append("; ".join(again[:4]) + (f" (+{len(again) - 4} more)" if len(again) > 4 else ""))
            redundant_runs.append({"run": run["runId"][:8], "location": run["location"], "trigger": trigger(run), "reasons": reasons})

    # attribution of the day's runs to batches
    def batch_of(run: dict) -> int:
        nbs = [m["nb"] for m in mats_of[run["runId"]]]
        if any(nbs):
            return max(nbs)
        return max((b["index"] for b in batches if b["landed_at"] <= run["creationTime"]), default=0)

    per_batch_runs: dict[int, list[dict]] = defaultdict(list)
    for run in day_runs:
        per_batch_runs[batch_of(run)].append(run)

    # latencies
    latency: dict[int, dict[str, float | None]] = {}
    for b in batches:
        row = {}
        for product in expected:
            if graph.get(product, {}).get("partitioned"):
                times = []
                for day in b["days"]:
                    hits = [m["ts"] for m in by_asset.get(product, ()) if m["partition"] == day and m["nb_all"] >= b["index"]]
                    times.append(min(hits) if hits else None)
                row[product] = None if not times or None in times else round(max(times) - b["landed_at"], 2)
            else:
                hits = [m["ts"] for m in by_asset.get(product, ()) if m["nb_all"] >= b["index"]]
                row[product] = round(min(hits) - b["landed_at"], 2) if hits else None
        latency[b["index"]] = row
    every = {i: (None if any(v is None for v in row.values()) else max(row.values(), default=None)) for i, row in latency.items()}

    failed = [r for r in day_runs if r["status"] in FAILED]
    in_day_mats = [m for m in mats if m["run"] in day_ids]
    per_batch = []
    for b in batches:
        mine = per_batch_runs.get(b["index"], [])
        per_batch.append({
            "batch": b["index"],
            "days": b["days"],
            "landing_to_all_s": every[b["index"]],
            "latency_s": latency[b["index"]],
            "runs": [f"{r['location']}:{trigger(r)}:{r['status']}" for r in mine],
            "partitions_built": {a: sum(1 for m in in_day_mats if m["asset"] == a and m["nb"] == b["index"]) for a in sorted({m["asset"] for m in in_day_mats})},
        })
    domains = sorted({p.split("/")[0] for p in expected})
    built = sorted({a for b in per_batch for a in b["partitions_built"]})
    return {
        "partitions_per_batch": {a: round(statistics.mean(b["partitions_built"].get(a, 0) for b in per_batch), 1) for a in built} if per_batch else {},
        "batches": len(batches),
        "p50_s": _median(list(every.values())),
        "p95_s": _pct(list(every.values()), 0.95),
        "not_refreshed": [{"batch": i, "products": [p for p, v in row.items() if v is None]} for i, row in latency.items() if any(v is None for v in row.values())],
        "per_product": {p: {"p50_s": _median([latency[i][p] for i in latency]), "p95_s": _pct([latency[i][p] for i in latency], 0.95)} for p in expected},
        "runs": len(day_runs),
        "runs_per_batch": round(len(day_runs) / max(1, len(batches)), 2),
        "runs_by_domain": {d: sum(1 for r in day_runs if r["location"] == d) for d in sorted({r["location"] for r in day_runs})},
        "runs_by_trigger": {t: sum(1 for r in day_runs if trigger(r) == t) for t in sorted({trigger(r) for r in day_runs})},
        "unattributed_runs": len(per_batch_runs.get(0, [])),
        "affected_domains": domains,
        "failed_runs": [{"run": r["runId"], "location": r["location"], "trigger": trigger(r), "status": r["status"]} for r in failed],
        "redundant_runs": redundant_runs,
        "sensor_runs": [{"batch": batch_of(r), "files": r["tags"].get("mesh/landed_files"), "days": f"{r['tags'].get('dagster/asset_partition_range_start')}..{r['tags'].get('dagster/asset_partition_range_end')}"}
                        for r in day_runs if r["tags"].get("dagster/sensor_name") == "claims_landing_sensor"],
        "per_batch": per_batch,
        "day_end": day_end,
    }


# -- one scale, end to end (a child process) --------------------------------------------------------------


def wait_for(what: str, check, timeout: float, every: float = 5.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - a busy webserver or database: ask again
            last = f"no answer: {exc}"[:300]
        if last and not isinstance(last, str):
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not reached within {timeout:.0f} s (last: {last!r})")


def quiet_window(url: str, seconds: float, quiet: float, tries: int = 3) -> tuple[float, float, str | None]:
    """A window of ``seconds`` in which the stack launched no run (the idle baseline): after the mesh
    has settled, up to ``tries`` windows; (start, end, a note when every window had a run)."""

    def settled():
        rows = sql_runs(url)
        if any(status in IN_PROGRESS for _, status, _ in rows):
            return "runs in progress"
        return True if time.time() - max(created for _, _, created in rows) >= min(quiet, 30.0) else "quiet period"

    for attempt in range(1, tries + 1):
        wait_for("the stack to be idle", settled, SETTLE_TIMEOUT)
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        launched = [created for _, _, created in sql_runs(url) if start <= created <= end]
        if not launched:
            return start, end, None if attempt == 1 else f"idle window: {attempt - 1} earlier window(s) had runs launched by the stack"
    return start, end, f"idle window: every one of {tries} windows had runs launched by the stack (the idle CPU includes them)"


def _log(message: str) -> None:
    print(f"[freshness {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def day_in_stack(scale: float, batches: int, interval: float, idle: float, graph: dict, setup_timeout: float = SETUP_TIMEOUT,
                 settle_timeout: float = SETTLE_TIMEOUT, quiet: float = QUIET, raw_out: str | None = None) -> dict[str, Any]:
    import boto3

    from benchmarks.whole_mesh import mesh_env
    from mesh_platform.deployment.stack import layout, processes

    home = Path(tempfile.mkdtemp(prefix="bench-fresh-stack-"))
    env = {**mesh_env(str(home)), "MESH_SENSOR_INTERVAL": TICK, "MESH_AUTOMATION_INTERVAL": TICK, "MESH_QUALITY_REPORTS": None}
    cli = [sys.executable, "-m", "mesh_platform.cli"]
    state_file = home / "stack" / "stack.json"
    sampler = None
    began = time.monotonic()
    try:
        up = run_command([*cli, "stack", "up", "--port", str(processes.free_port()), "--scale", f"{scale:g}"], env=env, cwd=ROOT, timeout=setup_timeout)
        state = json.loads(state_file.read_text())
        web, url = state["webserver"], state["env"]["DAGSTER_POSTGRES_URL"]
        domains = sorted(state["locations"])
        _log(f"scale {scale:g}: stack up in {up['wall_s']:.0f} s; bootstrapping")
        boot = run_command([*cli, "materialize", "--select", "policies", "--timeout", str(int(setup_timeout))], env={**env, **state["env"]}, cwd=ROOT,
                           timeout=setup_timeout)

        def built():
            found = stack_runs(web)
            if any(r["status"] in IN_PROGRESS for r in found):
                return f"{sum(r['status'] in IN_PROGRESS for r in found)} run(s) in progress"
            done = {r["location"] for r in found if r["status"] == "SUCCESS"}
            if not set(domains) <= done:
                return f"no successful run yet in {sorted(set(domains) - done)}"
            if time.time() - max(r["creationTime"] for r in found) < quiet:
                return "quiet period"
            return found

        wait_for("the mesh built by the daemon", built, max(60.0, setup_timeout - (time.monotonic() - began)))
        bootstrap_s = round(time.monotonic() - began, 1)
        roots = {p["name"]: p["pid"] for p in state["processes"]}
        try:
            roots["postgres"] = int((Path(state["postgres"]["pgdata"]) / "postmaster.pid").read_text().split()[0])
        except (OSError, KeyError, ValueError, IndexError):
            pass
        sampler = Sampler(roots).start()
        bootstrap_mats = materializations(url)
        built_assets = {m["asset"] for m in bootstrap_mats}
        candidates = downstream_products(graph, list(LANDED))
        expected = [p for p in candidates if p in built_assets]
        _log(f"scale {scale:g}: mesh built in {bootstrap_s:.0f} s ({len(bootstrap_mats)} materializations); idle {idle:.0f} s")
        idle_start, idle_end, idle_note = quiet_window(url, idle, quiet)

        e = state["env"]
        s3 = boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL_S3"], region_name=e["AWS_REGION"],
                          aws_access_key_id=e["AWS_ACCESS_KEY_ID"], aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])
        first_at = time.time() + 5
        planned, sizing = make_batches(Path(e["MESH_SOURCES"]), batches, first_at, interval, spread=float(TICK))
        landed = []
        for batch in planned:
            pause = batch["planned_at"] - time.time()
            if pause > 0:
                time.sleep(min(pause, interval + 5))
            put_start, put_end = land(s3, layout.LANDING_BUCKET, batch["files"])
            landed.append({"index": batch["index"], "days": batch["days"], "claims": batch["claims"], "files": sorted(batch["files"]),
                           "put_started": put_start, "landed_at": put_end})
            _log(f"scale {scale:g}: batch {batch['index']}/{batches} landed ({batch['claims']} claims on {batch['days'][0]})")

        def settled():
            rows = sql_runs(url)
            if any(status in IN_PROGRESS for _, status, _ in rows):
                return "runs in progress"
            if time.time() - max(created for _, _, created in rows) < quiet or time.time() - landed[-1]["landed_at"] < quiet:
                return "quiet period"
            return True

        settle_note = None
        try:
            wait_for("the day's runs to finish", settled, settle_timeout)
        except TimeoutError as exc:
            settle_note = str(exc)
        sampler.stop()
        runs = stack_runs(web)
        mats = materializations(url)
        day_start = landed[0]["put_started"]
        day_runs = [r for r in runs if r["creationTime"] >= day_start]
        day_end = max([landed[-1]["landed_at"], *(r["endTime"] or r["creationTime"] for r in day_runs)])
        raw = {"graph": graph, "expected": expected, "batches": landed, "runs": runs, "mats": mats, "day_start": day_start, "day_end": day_end}
        if raw_out:
            Path(raw_out).write_text(json.dumps({**raw, "samples": sampler.samples}))
        analysis = analyse(raw)
        boot_runs = [r for r in runs if r["creationTime"] < idle_start]
        idle_runs = [r for r in runs if idle_start <= r["creationTime"] < day_start]
        failed_ids = [r["runId"] for r in runs if r["status"] in FAILED]
        causes = failure_messages(url, failed_ids)
        phases = run_phases(day_runs, run_events(url, [r["runId"] for r in day_runs]), mats, [b["landed_at"] for b in landed])
        for item in analysis["failed_runs"]:
            item["cause"] = causes.get(item["run"], [])[:3]
            item["run"] = item["run"][:8]
        idle_cpu, idle_per = cpu_between(sampler.samples, idle_start, idle_end)
        day_cpu, day_per = cpu_between(sampler.samples, day_start, day_end)
        windows = [cpu_between(sampler.samples, b["landed_at"], landed[i + 1]["landed_at"] if i + 1 < len(landed) else day_end)[0] for i, b in enumerate(landed)]
        rss = max((s["rss_mb"] for s in sampler.samples if day_start <= s["t"] <= day_end + SAMPLE_EVERY), default=None)
        return {
            **analysis,
            "scale": scale,
            "interval_s": interval,
            **sizing,
            "stack_up_s": up["wall_s"],
            "bootstrap_s": bootstrap_s,
            "bootstrap_runs": len(boot_runs),
            "bootstrap_failed": [{"run": r["runId"][:8], "location": r["location"], "trigger": trigger(r), "cause": causes.get(r["runId"], [])[:2]}
                                 for r in boot_runs if r["status"] in FAILED],
            "bootstrap_runs_by_domain": {d: sum(1 for r in boot_runs if r["location"] == d) for d in sorted({r["location"] for r in boot_runs})},
            "runs_while_idle": [f"{r['location']}:{trigger(r)}" for r in idle_runs],
            "expected_products": expected,
            "never_built_in_bootstrap": [p for p in candidates if p not in built_assets],
            "idle_cpu_s_per_interval": round(idle_cpu / (idle_end - idle_start) * interval, 3),
            "idle_cpu_by_process": idle_per,
            "cpu_s_per_batch": round(day_cpu / len(landed), 3),
            "cpu_s_per_batch_window": windows,
            "cpu_s_by_process": day_per,
            "day_s": round(day_end - day_start, 1),
            "stack_peak_rss_mb": round(rss, 1) if rss else None,
            "settle_note": settle_note,
            "run_phases": phases,
            "idle_note": idle_note,
            "bootstrap_output_tail": boot["stdout"].strip().splitlines()[-1:] if boot.get("stdout") else [],
        }
    finally:
        if sampler is not None and sampler._thread.is_alive():
            sampler.stop()
        saved = json.loads(state_file.read_text()) if state_file.exists() else None
        try:
            run_command([*cli, "stack", "down"], env=env, cwd=ROOT, timeout=300)
        except CaseFailed as exc:
            _log(f"stack down: {exc}")
        if saved is not None:  # nothing of this stack may be left running, whatever happened above
            from mesh_platform.deployment.stack.postgres import stop_postgres
            from mesh_platform.deployment.stack.processes import group_alive

            for p in saved["processes"]:
                if group_alive(p["pid"]):
                    os.killpg(p["pid"], signal.SIGKILL)
            if saved.get("postgres", {}).get("pgdata") and (Path(saved["postgres"]["pgdata"]) / "postmaster.pid").exists():
                stop_postgres(saved["postgres"])
        shutil.rmtree(home, ignore_errors=True)


# -- the benchmark -----------------------------------------------------------------------------------------


def _cases(result: BenchmarkResult, m: dict, size: str, quick: bool) -> None:
    detail = {k: m[k] for k in ("per_product", "partitions_per_batch", "not_refreshed", "runs_by_domain", "runs_by_trigger", "sensor_runs", "per_batch",
                                "expected_products", "never_built_in_bootstrap", "claims_per_batch", "interval_s", "run_phases") if k in m}
    result.cases.append(Case("landing -> every product refreshed, p50", size, m["p50_s"], None, peak_rss_mb=m["stack_peak_rss_mb"], details=detail))
    result.cases.append(Case("landing -> every product refreshed, p95", size, m["p95_s"], "landing -> every product refreshed, p50", peak_rss_mb=m["stack_peak_rss_mb"]))
    result.cases.append(Case("idle stack CPU per interval", size, m["idle_cpu_s_per_interval"], None, cpu_seconds=m["idle_cpu_s_per_interval"],
                             details={"by_process": m["idle_cpu_by_process"]}))
    result.cases.append(Case("stack CPU per batch", size, m["cpu_s_per_batch"], "idle stack CPU per interval", cpu_seconds=m["cpu_s_per_batch"],
                             peak_rss_mb=m["stack_peak_rss_mb"], details={"by_process": m["cpu_s_by_process"], "per_window": m["cpu_s_per_batch_window"]}))
    limit = TARGET_P95.get(m["scale"])
    if limit is not None:
        result.targets.append(Target(f"landing -> every product refreshed, p95 <= {limit:g} s @ {size}", limit, "s", m["p95_s"],
                                     met=False if m["p95_s"] is None else None))
    affected = len(m["affected_domains"])
    result.targets.append(Target(f"runs per batch / domains affected ({affected}: {', '.join(m['affected_domains'])}) <= 1 @ {size}", 1.0, "x",
                                 round(m["runs_per_batch"] / affected, 2) if affected else None))
    if not quick:
        result.targets.append(Target(f"failed runs during the day @ {size}", 0, "runs", len(m["failed_runs"])))
        result.targets.append(Target(f"redundant runs during the day @ {size}", 0, "runs", len(m["redundant_runs"])))
    result.notes.append(
        f"{size}: {m['batches']} batches of {m['claims_per_batch']} claims every {m['interval_s']:g} s; stack up {m['stack_up_s']:.0f} s, "
        f"mesh built {m['bootstrap_s']:.0f} s after ({m['bootstrap_runs']} runs); p50 {m['p50_s']} s, p95 {m['p95_s']} s; "
        f"{m['runs']} runs ({m['runs_per_batch']} per batch: {m['runs_by_domain']}; by trigger {m['runs_by_trigger']}); "
        f"{len(m['failed_runs'])} failed, {len(m['redundant_runs'])} redundant; CPU {m['cpu_s_per_batch']} s per batch "
        f"(idle stack {m['idle_cpu_s_per_interval']} s per interval); stack peak RSS {m['stack_peak_rss_mb']} MiB")
    per_batch = ", ".join(f"{b['batch']}: {b['landing_to_all_s'] if b['landing_to_all_s'] is not None else 'not refreshed'}" for b in m["per_batch"])
    result.notes.append(f"{size}: landing -> every product refreshed per batch (s): {per_batch}")
    built = ", ".join(f"{a} {n:g}" for a, n in m["partitions_per_batch"].items())
    result.notes.append(f"{size}: asset partitions materialized per batch (mean; a day of a daily-partitioned asset is one): {built}")
    per_product = "; ".join(f"{p} {v['p50_s']}/{v['p95_s']}" for p, v in m["per_product"].items())
    result.notes.append(f"{size}: per product p50/p95 (s): {per_product}")
    for domain, phases in (m.get("run_phases") or {}).items():
        spans = ", ".join(f"{k} {v}" for k, v in phases.items() if k != "per step")
        per_step = ", ".join(f"{k} {v}" for k, v in phases["per step"].items())
        result.notes.append(f"{size}: where a {domain} run's time goes (median s): {spans}; per step: {per_step}")
    if m["never_built_in_bootstrap"]:
        result.notes.append(f"{size}: never built during the bootstrap, left out of the latency: {', '.join(m['never_built_in_bootstrap'])}")
    for item in m["failed_runs"]:
        result.notes.append(f"{size}: failed run {item['run']} ({item['location']}, {item['trigger']}, {item['status']}): {' / '.join(item.get('cause') or ['no failure event'])}")
    for item in m["redundant_runs"]:
        result.notes.append(f"{size}: redundant run {item['run']} ({item['location']}, {item['trigger']}): {' | '.join(item['reasons'])}")
    if m["bootstrap_failed"]:
        result.notes.append(f"{size}: failed during the bootstrap (not counted above): " + "; ".join(
            f"{f['run']} {f['location']} ({f['trigger']}): {' / '.join(f['cause']) or 'no failure event'}" for f in m["bootstrap_failed"]))
    if m["runs_while_idle"]:
        result.notes.append(f"{size}: runs launched while nothing landed (idle window): {', '.join(m['runs_while_idle'])}")
    if m.get("idle_note"):
        result.notes.append(f"{size}: {m['idle_note']}")
    if m.get("settle_note"):
        result.notes.append(f"{size}: {m['settle_note']}")


def run(config: RunConfig) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="p95 against p50 of the same day; the stack's CPU per batch against the idle stack's per interval")
    if config.quick and os.environ.get("MESH_BENCH_FRESHNESS_QUICK") != "1":
        # a quick run is a smoke test of every benchmark in about a minute; starting the production
        # stack alone takes minutes on two cores (and over half an hour when the cores are shared)
        result.status = "skipped"
        result.reason = "starts the production stack: run `python -m benchmarks run --only freshness` (or set MESH_BENCH_FRESHNESS_QUICK=1 for its quick day)"
        return result
    scales = tuple(float(s) for s in config.sizes) or ((QUICK_SCALE,) if config.quick else SCALES)
    batches = QUICK_BATCHES if config.quick else BATCHES
    interval = QUICK_INTERVAL if config.quick else INTERVAL
    idle = QUICK_IDLE if config.quick else IDLE
    graph = run_isolated("benchmarks.freshness:mesh_graph", {}, timeout=600)
    graph.pop("process_wall_s", None), graph.pop("process_cpu_s", None), graph.pop("peak_rss_mb", None)
    for scale in scales:
        size = f"scale {scale:g}"
        config.log(f"  {NAME}: {size}: stack up, bootstrap, {batches} landings every {interval:g} s")
        raw_out = str(Path(tempfile.gettempdir()) / f"freshness-raw-scale{scale:g}.json")
        timeout = SETUP_TIMEOUT + idle + batches * interval + SETTLE_TIMEOUT + 900
        try:
            measured = run_isolated("benchmarks.freshness:day_in_stack",
                                    {"scale": scale, "batches": batches, "interval": interval, "idle": idle, "graph": graph, "raw_out": raw_out}, timeout=timeout)
        except CaseFailed as exc:
            result.notes.append(f"{size}: not measured: {str(exc).strip().splitlines()[-1][:600]}")
            config.log(f"  {NAME}: {size} failed: {exc}")
            continue
        measured["raw"] = raw_out
        _cases(result, measured, size, config.quick)
    if not result.cases:
        result.status, result.reason = "error", "no scale measured: " + " ".join(result.notes)[-1500:]
    result.add_ratios()
    return result
