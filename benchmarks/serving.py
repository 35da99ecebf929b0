"""serving: ``mesh serve`` against reading the Delta table directly, in the same run.

A synthetic product (:mod:`benchmarks.synthetic_table`, 11 mixed-type columns; 5M rows, 50k with
``--quick``) is published into a lake of its own; ``mesh serve`` runs in a subprocess over it
(its own mesh home and instance, so every request is decided and audited for real), and a
consumer domain granted the product reads it:

``pyarrow direct`` (baseline)
    the Delta table's current files streamed with pyarrow's dataset scanner, batch by batch: what a
    notebook reading the files does, with no decision and no audit.
``Flight do_get``
    the same product through ``mesh serve``'s Arrow Flight, iterated batch by batch (never
    ``read_all``): throughput target >= 0.8x the baseline, i.e. time <= 1.25x.
``DuckDB direct aggregate`` (baseline of the next)
    a GROUP BY over the table in DuckDB reading the same files.
``serve SQL aggregate``
    the same query through ``POST /sql`` (sandboxed DuckDB over the granted port): target <= 1.3x.
``32 concurrent clients``
    32 threads each sending a filtered read at once (``serve_concurrent_requests`` raised to 32 for
    the consumer): p50/p99 latency, and the service's peak memory (``VmHWM``) against the table's
    size: streaming keeps it far below the table, never the whole result in memory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RunConfig
from benchmarks.results import BenchmarkResult, Case, Target
from benchmarks.synthetic_table import CONTRACT_ID, DOMAIN, PRODUCT, make_frame, rows_label, write_contract

NAME = "serving"
DESCRIPTION = "mesh serve: Flight throughput and SQL aggregates vs direct Delta/DuckDB reads; 32 concurrent clients"
FULL_ROWS, QUICK_ROWS = 5_000_000, 50_000
QUICK_SECONDS = 35  # rough duration of the quick run on 2 cores (the runner starts the slowest first)
FULL_CLIENTS, QUICK_CLIENTS = 32, 4
REPEATS, QUICK_REPEATS = 3, 1
CONSUMER = "reader"
AGGREGATE = f"SELECT category, region, count(*) AS orders, sum(amount) AS amount, avg(quantity) AS quantity FROM {DOMAIN}.{PRODUCT} GROUP BY 1, 2 ORDER BY 1, 2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(root: Path, rows: int) -> dict:
    import yaml

    from mesh_platform.contracts import load_contract
    from mesh_platform.storage import publishing
    from mesh_platform.storage.lake import Lake

    contract_path = write_contract(root)
    domains = root / "domains"
    (domains / DOMAIN / "grants.yaml").write_text(yaml.safe_dump({"grants": [
        {"product": PRODUCT, "consumer": CONSUMER, "purpose": "Benchmark reads."}]}))
    (domains / CONSUMER).mkdir(parents=True, exist_ok=True)
    (domains / CONSUMER / "domain.yaml").write_text(yaml.safe_dump({
        "name": CONSUMER, "kind": "consumer-aligned", "description": "Benchmark consumer.", "team": "Benchmarks",
        "owners": ["team:benchmarks"], "quotas": {"serve_concurrent_requests": 32, "serve_query_seconds": 600}}))
    import pyarrow as pa

    table = pa.Table.from_pandas(make_frame(rows), preserve_index=False)
    lake = Lake(str(root / "lake"))
    publishing.publish(lake, load_contract(contract_path), table)
    return {"lake": str(root / "lake"), "domains": str(domains), "bytes": table.nbytes}


def _direct_scan(lake: str) -> tuple[float, int]:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    started = time.perf_counter()
    dt = DeltaTable(f"{lake}/{DOMAIN}/{PRODUCT}/v1")
    rows = sum(b.num_rows for b in ds.dataset(dt.file_uris(), format="parquet").to_batches(batch_size=64 * 1024))
    return time.perf_counter() - started, rows


def _direct_aggregate(lake: str) -> float:
    import duckdb
    from deltalake import DeltaTable

    started = time.perf_counter()
    files = DeltaTable(f"{lake}/{DOMAIN}/{PRODUCT}/v1").file_uris()
    with duckdb.connect() as con:
        con.execute(f'CREATE SCHEMA "{DOMAIN}"; CREATE VIEW "{DOMAIN}"."{PRODUCT}" AS SELECT * FROM read_parquet({files!r})')
        con.execute(AGGREGATE).fetchall()
    return time.perf_counter() - started


def _flight_scan(url: str, token: str) -> tuple[float, int]:
    import pyarrow.flight as flight

    client = flight.FlightClient(url)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    started = time.perf_counter()
    reader = client.do_get(flight.Ticket(json.dumps({"product": CONTRACT_ID}).encode()), options=options)
    rows = sum(chunk.data.num_rows for chunk in reader)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, rows


def _serve_aggregate(url: str, token: str) -> float:
    from mesh_platform.serving.client import MeshClient

    started = time.perf_counter()
    MeshClient(url, token).sql_arrow(AGGREGATE)
    return time.perf_counter() - started


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(config: RunConfig) -> BenchmarkResult:
    from concurrent.futures import ThreadPoolExecutor

    rows = QUICK_ROWS if config.quick else FULL_ROWS
    clients = QUICK_CLIENTS if config.quick else FULL_CLIENTS
    repeats = QUICK_REPEATS if config.quick else REPEATS
    size = rows_label(rows)
    result = BenchmarkResult(NAME, DESCRIPTION, baseline="the Delta table read directly (pyarrow, DuckDB), same run")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        config.log(f"  {NAME}: publishing {size}")
        setup = _setup(root, rows)
        env = {**os.environ, "MESH_HOME": str(root / "home"), "MESH_DOMAINS": setup["domains"], "MESH_LAKE": setup["lake"],
               "DAGSTER_HOME": str(root / "home" / "dagster_home")}
        for var in ("MESH_SOURCES", "MESH_WORKSPACE"):
            env.pop(var, None)
        token = subprocess.run([sys.executable, "-m", "mesh_platform.cli", "tokens", "issue", CONSUMER], env=env,
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        http_port, flight_port = _free_port(), _free_port()
        log = open(root / "serve.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "mesh_platform.cli", "serve", "--http-port", str(http_port), "--flight-port", str(flight_port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:  # bounded: the service starts within the deadline or the benchmark fails
                try:
                    socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                    socket.create_connection(("127.0.0.1", flight_port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("mesh serve did not start: " + (root / "serve.log").read_text()[-2000:])
                    time.sleep(0.2)
            http_url, flight_url = f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{flight_port}"
            _flight_scan(flight_url, token)  # warm: first decisions, imports in the service
            direct = [_direct_scan(setup["lake"]) for _ in range(repeats)]
            served = [_flight_scan(flight_url, token) for _ in range(repeats)]
            assert all(r == rows for _, r in direct + served), "a scan returned another row count"
            _serve_aggregate(http_url, token)
            duck = [_direct_aggregate(setup["lake"]) for _ in range(repeats)]
            sql = [_serve_aggregate(http_url, token) for _ in range(repeats)]

            def one(_):
                from mesh_platform.serving.client import MeshClient

                started = time.perf_counter()
                MeshClient(http_url, token).read_arrow(CONTRACT_ID, columns=["order_id", "amount"], filter=[["category", "=", "books"]])
                return time.perf_counter() - started

            with ThreadPoolExecutor(max_workers=clients) as pool:
                latencies = sorted(pool.map(one, range(clients)))
            peak = _vm_hwm_mb(server.pid)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
            log.close()
    median = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    scan_direct, scan_served = median([t for t, _ in direct]), median([t for t, _ in served])
    result.cases += [
        Case("pyarrow direct", size, scan_direct, None, details={"rows_per_s": round(rows / scan_direct)}),
        Case("Flight do_get", size, scan_served, "pyarrow direct", details={"rows_per_s": round(rows / scan_served)}),
        Case("DuckDB direct aggregate", size, median(duck), None),
        Case("serve SQL aggregate", size, median(sql), "DuckDB direct aggregate"),
        Case(f"{clients} concurrent clients", size, round(latencies[len(latencies) // 2], 4), None, peak_rss_mb=peak, details={
            "p50_s": round(latencies[len(latencies) // 2], 4),
            "p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 4),
            "service_peak_rss_mb": peak, "table_arrow_mb": round(setup["bytes"] / 1024**2, 1)}),
    ]
    result.add_ratios()
    flight = result.case("Flight do_get", size)
    result.targets.append(Target(f"Flight throughput >= 0.8x pyarrow direct (time <= 1.25x) @ {size}", 1.25, "x", flight.ratio))
    result.targets.append(Target(f"SQL aggregate <= 1.3x DuckDB direct @ {size}", 1.3, "x", result.case("serve SQL aggregate", size).ratio))
    result.notes.append(f"service peak memory {peak} MiB for a {setup['bytes'] / 1024**2:.0f} MiB table (Arrow): responses stream in 64Ki-row batches")
    return result
