"""A synthetic data product: a mixed-type orders table and its ODCS v3.1 contract.

Shared by the ``io_roundtrip`` and ``quality`` benchmarks. The table mixes the column kinds real
products have: a unique string key, a high-cardinality string, low-cardinality categories, floats,
integers, a timestamp, dates as Python ``date`` objects (what ``Series.dt.date`` gives a domain),
booleans and nullable floats and strings. The contract carries the kinds of rules real contracts
have (required columns, a unique key, a pattern, ranges, ``invalidValues``, ``nullValues``,
``rowCount``). It is written into a folder laid out like the mesh
(``<root>/domains/bench/contracts/orders.yaml``) so that both ``load_contract`` and the IO
manager's registry lookup (``MESH_DOMAINS=<root>/domains``) find it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

DOMAIN = "bench"
PRODUCT = "orders"
CONTRACT_ID = f"{DOMAIN}.{PRODUCT}"
CATEGORIES = ["books", "garden", "toys", "music", "sports", "kitchen", "office", "outdoor"]
REGIONS = ["north", "south", "east", "west", "central"]

# (name, logicalType, required, extra contract fields)
COLUMNS: list[tuple[str, str, bool, dict]] = [
    ("order_id", "string", True, {"unique": True, "primaryKey": True, "primaryKeyPosition": 1, "logicalTypeOptions": {"pattern": "^ORD-[0-9]{10}$"}}),
    ("customer_id", "string", True, {}),
    ("category", "string", True, {"quality": [{"metric": "invalidValues", "arguments": {"validValues": CATEGORIES}, "mustBe": 0}]}),
    ("region", "string", True, {}),
    ("amount", "number", True, {"logicalTypeOptions": {"minimum": 0}, "quality": [{"metric": "nullValues", "mustBe": 0}]}),
    ("quantity", "integer", True, {"logicalTypeOptions": {"minimum": 1, "maximum": 1000}}),
    ("created_at", "timestamp", True, {}),
    ("order_date", "date", True, {}),
    ("is_priority", "boolean", True, {}),
    ("discount", "number", False, {}),
    ("coupon_code", "string", False, {}),
]


def rows_label(rows: int) -> str:
    """``1M rows``, ``20k rows``..."""
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M rows"
    return f"{rows // 1000}k rows" if rows >= 1000 else f"{rows} rows"


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` orders, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.arange(rows)).astype("str").str.zfill(10)
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 730 * 86_400, rows), unit="s")
    discount = np.round(rng.random(rows) * 0.3, 3)
    coupons = pd.Series(np.arange(rows) % 9_973).astype("str")
    return pd.DataFrame(
        {
            "order_id": "ORD-" + ids,
            "customer_id": "C-" + pd.Series(rng.integers(0, max(rows // 10, 1), rows)).astype("str"),
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), rows)],
            "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), rows)],
            "amount": np.round(rng.lognormal(3.0, 1.0, rows), 2),
            "quantity": rng.integers(1, 20, rows),
            "created_at": created,
            "order_date": created.normalize().date,
            "is_priority": rng.random(rows) < 0.1,
            "discount": np.where(rng.random(rows) < 0.3, np.nan, discount),
            "coupon_code": ("CPN-" + coupons).where(rng.random(rows) < 0.2),
        }
    )


def contract_document() -> dict:
    """The ODCS v3.1 contract of the synthetic product, as YAML-ready data."""
    properties = []
    for name, logical, required, extra in COLUMNS:
        prop = {"name": name, "logicalType": logical, "required": required, "classification": "internal", "description": f"Synthetic {logical} column."}
        prop.update(extra)
        properties.append(prop)
    return {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": CONTRACT_ID,
        "name": PRODUCT,
        "version": "1.0.0",
        "status": "active",
        "domain": DOMAIN,
        "description": {"purpose": "Synthetic orders used by the benchmarks."},
        "schema": [
            {
                "name": PRODUCT,
                "physicalType": "table",
                "properties": properties,
                "quality": [{"metric": "rowCount", "mustBeGreaterThan": 0}],
            }
        ],
        "team": {"name": "Benchmarks", "members": [{"username": "bench@example.com", "role": "owner"}]},
    }


def write_contract(root: Path) -> Path:
    """Write the contract (and a domain descriptor) under ``root/domains``; returns the contract path."""
    domain_dir = Path(root) / "domains" / DOMAIN
    (domain_dir / "contracts").mkdir(parents=True, exist_ok=True)
    (domain_dir / "domain.yaml").write_text(
        yaml.safe_dump({"name": DOMAIN, "kind": "source-aligned", "description": "Benchmarks.", "team": "Benchmarks", "owners": ["team:benchmarks"]})
    )
    path = domain_dir / "contracts" / f"{PRODUCT}.yaml"
    path.write_text(yaml.safe_dump(contract_document(), sort_keys=False))
    return path
