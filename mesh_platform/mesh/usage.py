"""Usage and estimated cost per product and per domain, from the Dagster instance and the lake.

For a window (``--since``, default 30 days) and each product of the mesh:

- **runs**: the distinct runs that published it (a run over 30 days of a partitioned product is
  one run, though Dagster records 30 materializations); **compute seconds**: the durations of the
  steps that did (``STEP_SUCCESS`` and ``STEP_FAILURE`` events of those runs, the product's own step;
  a step that publishes several products, as a dbt run does, counts in full for each of them);
- **rows**: rows published (sum over the window) and in the latest version;
- **bytes stored**: everything under ``<lake>/<domain>/<product>/`` now (ports and quality reports);
- **reads per consumer**: granted reads in the audit log (``mesh audit``), per consuming domain;
- **estimated cost**: compute seconds x the price per CPU-second, plus bytes stored x the price per
  GB-month x the window's share of a month. Prices come from ``quotas.yaml`` (``prices:
  cpu_second``, ``gb_month``) or the built-in list prices below.

A domain's line is not the sum of its products' lines where they share: its **runs** are the
distinct runs that published any of its products (one run publishing both ``policies`` products
is one run, not two) and its **compute seconds** count each step once (the dbt step that builds four
analytics products, once); its cost is computed from those. Rows, reads and bytes stored add up,
plus the bytes of its private and quarantine areas.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mesh_platform.foundations.problems import ContractError, Problem, display_path

DEFAULT_PRICES = {"cpu_second": 0.000048, "gb_month": 0.023}  # on-demand list prices of a small cloud VM and object storage, USD
MONTH_SECONDS = 30 * 24 * 3600


@dataclass
class ProductUsage:
    domain: str
    product: str
    runs: int = 0
    compute_seconds: float = 0.0
    rows_published: int = 0
    rows_latest: int | None = None
    bytes_stored: int = 0
    reads: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    run_ids: set = field(default_factory=set, repr=False, compare=False)
    steps: dict = field(default_factory=dict, repr=False, compare=False)  # (run id, step key) -> seconds


def load_prices(domains_root: Path) -> dict[str, float]:
    from mesh_platform.contracts.loader import load_yaml
    from mesh_platform.governance.quotas import mesh_quotas_path

    path = mesh_quotas_path(domains_root)
    prices = dict(DEFAULT_PRICES)
    if not path.exists():
        return prices
    raw = (load_yaml(path) or {}).get("prices") or {}
    for key, value in raw.items():
        if key not in DEFAULT_PRICES:
            raise ContractError([Problem(display_path(path), f"prices.{key}", f"unknown price (known: {', '.join(DEFAULT_PRICES)})")])
        try:
            prices[key] = float(value)
        except (TypeError, ValueError):
            raise ContractError([Problem(display_path(path), f"prices.{key}", f"{value!r} is not a number")]) from None
        if prices[key] < 0:
            raise ContractError([Problem(display_path(path), f"prices.{key}", "must not be negative")])
    return prices


def _step_seconds(instance: dg.DagsterInstance, run_id: str, step_key: str) -> float:
    total = 0.0
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}):
        event = entry.dagster_event
        if event is None or event.step_key != step_key:
            continue
        data = event.event_specific_data
        duration = getattr(data, "duration_ms", None)
        if duration is not None:
            total += duration / 1000
    return total


def product_usage(instance: dg.DagsterInstance, lake, domain: str, product: str, since: float, prices: dict[str, float], window_seconds: float) -> ProductUsage:
    from mesh_platform.governance.audit import audit_records

    key = dg.AssetKey([domain, product])
    usage = ProductUsage(domain, product)
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_timestamp=since), limit=10_000).records
    runs = set()
    for record in records:
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        rows = meta["dagster/row_count"].value if "dagster/row_count" in meta else 0
        if usage.rows_latest is None:
            usage.rows_latest = int(rows or 0)
        if record.run_id not in runs:
            # a run over several days of a partitioned product records one materialization per
            # day, each with the rows that run published: its rows count once
            usage.rows_published += int(rows or 0)
            runs.add(record.run_id)
            step = record.event_log_entry.dagster_event.step_key if record.event_log_entry.dagster_event else None
            if step:
                usage.steps[(record.run_id, step)] = _step_seconds(instance, record.run_id, step)
    usage.compute_seconds = sum(usage.steps.values())
    usage.runs = len(runs)
    usage.run_ids = runs  # the domain counts each run once, however many of its products it published
    usage.bytes_stored = lake.size_under(f"{domain}/{product}")
    for read in audit_records(instance, [key]):
        if read.kind == "read" and read.consumer and read.consumer != domain and _epoch(read.time) >= since:
            usage.reads[read.consumer] = usage.reads.get(read.consumer, 0) + 1
    usage.cost = cost(usage.compute_seconds, usage.bytes_stored, prices, window_seconds)
    return usage


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def cost(compute_seconds: float, bytes_stored: int, prices: dict[str, float], window_seconds: float) -> float:
    storage_gb_months = bytes_stored / 1e9 * (window_seconds / MONTH_SECONDS)
    return round(compute_seconds * prices["cpu_second"] + storage_gb_months * prices["gb_month"], 6)


def mesh_usage(mesh, lake, instance: dg.DagsterInstance, since_days: float = 30.0, domains_root: Path | None = None) -> dict[str, Any]:
    """Usage of every product and domain of the loaded ``mesh`` over the last ``since_days``."""
    from mesh_platform.contracts.registry import default_domains_root

    window = since_days * 24 * 3600
    since = time.time() - window
    prices = load_prices(domains_root or default_domains_root())
    domains = []
    for loaded in mesh.domains:
        if not loaded.ok:
            continue
        name = loaded.domain.name
        products = [product_usage(instance, lake, name, p, since, prices, window) for p in loaded.domain.product_names]
        other = lake.size_under(f"{name}/_private") + lake.size_under(f"{name}/_quarantine")
        steps = {k: v for p in products for k, v in p.steps.items()}  # a step publishing several products, once
        compute_seconds = sum(steps.values())
        bytes_stored = sum(p.bytes_stored for p in products) + other
        domain = {
            "domain": name,
            "runs": len(set().union(*(p.run_ids for p in products))),  # a run publishing two products counts once
            "compute_seconds": round(compute_seconds, 3),
            "rows_published": sum(p.rows_published for p in products),
            "bytes_stored": bytes_stored,
            "reads": sum(sum(p.reads.values()) for p in products),
            "cost": cost(compute_seconds, bytes_stored, prices, window),
            "products": [{k: v for k, v in asdict(p).items() if k not in ("run_ids", "steps")} for p in products],
        }
        domains.append(domain)
    return {"since_days": since_days, "prices": prices, "currency": "USD", "domains": domains}


__all__ = ["DEFAULT_PRICES", "ProductUsage", "cost", "load_prices", "mesh_usage", "product_usage"]
