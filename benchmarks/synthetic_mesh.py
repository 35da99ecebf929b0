"""Generate a synthetic mesh of N data products over D domains, laid out like the real project.

The same plan (which product lives in which domain, which products it reads) can be written in
three *flavors*, so that the platform is always compared with Dagster on identical asset graphs::

    <root>/workspace.yaml                      one code location per domain
    <root>/domains/__init__.py
    <root>/domains/<domain>/__init__.py
    <root>/domains/<domain>/domain.yaml        (platform flavor) descriptor
    <root>/domains/<domain>/contracts/<p>.yaml (platform flavor) one ODCS v3.1 contract per product
    <root>/domains/<domain>/grants.yaml        (platform flavor) a grant per consuming domain
    <root>/domains/<domain>/definitions.py     ``defs``: the domain's code location

``platform``
    ``Domain.load(__file__)``, ``@domain.product`` with ``InputPort`` s, ``domain.definitions()``
    (what a domain team writes).
``dagster``
    bare ``@dg.asset`` with the same keys, groups and ``AssetIn`` s, upstream products of other
    domains as ``dg.AssetSpec`` (the baseline).
``dagster_rich``
    the ``dagster`` flavor plus, hand-written, what the platform derives from contracts:
    description, owners, tags, kinds, column schema, the same ``mesh/*`` metadata keys, code
    version, the same asset checks (one per quality rule, the required columns' together, plus
    governance, quarantine and quota),
    the domain's pool, freshness policy and automation condition from the SLAs, and an automation
    sensor per domain. Its asset functions have the platform flavor's pandas bodies, so its module
    imports pandas as a real domain's does. It separates what Dagster itself costs for all that
    from what the platform's machinery (contracts, registry, ports, plan) costs.

The plan is a DAG: domain ``k`` holds every ``D``-th product, and each product of a domain other
than the first reads 0 to 3 products of earlier domains (seeded, so every flavor and every run
gets the same graph). Put ``<root>`` first on ``PYTHONPATH`` and ``MESH_DOMAINS=<root>/domains``.

Also usable by hand: ``python -m benchmarks.synthetic_mesh OUT --products 200 --flavor platform``.
"""

from __future__ import annotations

import argparse
import random
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

FLAVORS = ("platform", "dagster", "dagster_rich")
PACKAGE = "domains"
PORT_COLUMNS = ["id", "value"]
# (column, logicalType, required) of every synthetic product
COLUMNS = [
    ("id", "string", True),
    ("value", "number", True),
    ("category", "string", True),
    ("updated_at", "timestamp", True),
    ("day", "date", False),
    ("flag", "boolean", False),
]
OWNER = "data-team@example.com"
SLA_HOURS = 24


@dataclass(frozen=True)
class Product:
    domain: str
    name: str
    inputs: tuple[tuple[str, str], ...] = ()
    """Upstream products as (domain, product)."""

    @property
    def contract_id(self) -> str:
        return f"{self.domain}.{self.name}"


@dataclass(frozen=True)
class SyntheticMesh:
    root: Path
    flavor: str
    domains: tuple[str, ...]
    products: tuple[Product, ...]

    @property
    def domains_dir(self) -> Path:
        return self.root / PACKAGE

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    def module(self, domain: str) -> str:
        return f"{PACKAGE}.{domain}.definitions"

    @property
    def modules(self) -> list[str]:
        return [self.module(d) for d in self.domains]

    def env(self) -> dict[str, str]:
        """Environment for a process that loads this mesh (with ``root`` first on PYTHONPATH).

        ``MESH_HOME`` is the mesh's own ``.mesh`` folder, as in the project, so that state the
        platform keeps across processes (its cache of parsed contracts) persists between loads.
        """
        return {"MESH_DOMAINS": str(self.domains_dir), "MESH_WORKSPACE": str(self.workspace), "MESH_HOME": str(self.root / ".mesh")}


# -- the plan -----------------------------------------------------------------------------------


def domain_names(count: int) -> list[str]:
    return [f"dom{i:02d}" for i in range(count)]


def plan(products: int, domains: int = 20, max_inputs: int = 3, seed: int = 0) -> tuple[tuple[str, ...], tuple[Product, ...]]:
    """Deterministic DAG of ``products`` products over ``domains`` domains."""
    rng = random.Random(seed)
    names = domain_names(domains)
    planned: list[Product] = []
    earlier: list[Product] = []  # products of domains before the current one
    for k, domain in enumerate(names):
        mine = []
        for index in range(k, products, domains):
            count = 0 if not earlier else rng.randint(0, min(max_inputs, len(earlier)))
            upstream = rng.sample(earlier, count)
            mine.append(Product(domain, f"p{index:05d}", tuple((u.domain, u.name) for u in upstream)))
        planned += mine
        earlier += mine
    return tuple(names), tuple(planned)


# -- writing ------------------------------------------------------------------------------------


def _contract(product: Product) -> dict:
    return {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": product.contract_id,
        "name": product.name,
        "version": "1.0.0",
        "status": "active",
        "domain": product.domain,
        "tags": ["synthetic"],
        "description": {
            "purpose": f"Synthetic product {product.name} of {product.domain}.",
            "usage": "Benchmarks only.",
        },
        "schema": [
            {
                "name": product.name,
                "physicalType": "table",
                "description": "One row per id.",
                "properties": [
                    {
                        "name": name,
                        "logicalType": logical,
                        "required": required,
                        "classification": "internal",
                        "description": f"The {name} of a row.",
                        **({"unique": True, "primaryKey": True, "primaryKeyPosition": 1} if name == "id" else {}),
                    }
                    for name, logical, required in COLUMNS
                ],
                "quality": [{"metric": "rowCount", "mustBeGreaterThan": 0}],
            }
        ],
        "slaProperties": [
            {"property": "latency", "value": SLA_HOURS, "unit": "h"},
            {"property": "frequency", "value": SLA_HOURS, "unit": "h"},
        ],
        "team": {"name": f"Team {product.domain}", "members": [{"username": OWNER, "role": "owner"}]},
        "customProperties": [{"property": "accessLevel", "value": "internal"}],
    }


def _params(product: Product) -> list[str]:
    return [f"in{i}" for i in range(len(product.inputs))]


def _body(product: Product) -> str:
    params = _params(product)
    return f"pd.concat([{', '.join(params)}])" if params else "pd.DataFrame({c: [] for c in COLUMNS})"


def _platform_module(domain: str, products: list[Product]) -> str:
    blocks = []
    for p in products:
        ports = "".join(
            f'\n    "{param}": InputPort("{d}.{n}", major=1, columns={PORT_COLUMNS!r}),' for param, (d, n) in zip(_params(p), p.inputs)
        )
        inputs = f", inputs={{{ports}\n}}" if ports else ""
        signature = ", ".join(f"{param}: pd.DataFrame" for param in _params(p))
        blocks.append(f'@domain.product("{p.name}"{inputs})\ndef {p.name}({signature}) -> pd.DataFrame:\n    return {_body(p)}\n')
    header = f'''"""Synthetic domain {domain} (generated by benchmarks.synthetic_mesh, platform flavor)."""

import pandas as pd

from mesh_platform import Domain, InputPort

COLUMNS = {[c for c, _, _ in COLUMNS]!r}

domain = Domain.load(__file__)
'''
    return header + "\n\n" + "\n\n".join(blocks) + "\n\ndefs = domain.definitions()\n"


def _dagster_module(domain: str, products: list[Product], rich: bool) -> str:
    blocks, externals = [], {}
    for p in products:
        ins = ", ".join(f'"{param}": dg.AssetIn(key=["{d}", "{n}"])' for param, (d, n) in zip(_params(p), p.inputs))
        for d, n in p.inputs:
            externals[(d, n)] = None
        extra = ""
        if rich:
            extra = (
                f'\n    description=_description("{p.name}"), owners=OWNERS, kinds={{"pandas", "parquet"}},'
                f'\n    tags={{"mesh/domain": "{domain}", "mesh/type": "product", "mesh/status": "active", "mesh/classification": "internal", "mesh/access": "internal", "mesh/policies": "passed"}}, pool="{domain}",'
                f'\n    metadata=_metadata("{domain}", "{p.name}"), code_version="1.0.0-{zlib.crc32(p.name.encode()):012d}",'
                f'\n    check_specs=_checks(["{domain}", "{p.name}"]), freshness_policy=FRESHNESS,'
                f'\n    automation_condition={"dg.AutomationCondition.eager()" if p.inputs else "ON_CRON"},'
            )
        if rich:  # the same function body as the platform flavor: a hand-written pandas domain
            signature = ", ".join(f"{param}: pd.DataFrame" for param in _params(p))
            # (no return annotation: Dagster reads one as the outputs, and the checks are outputs too)
            body = f"def {p.name}({signature}):\n    return {_body(p)}\n"
        else:
            body = f"def {p.name}({', '.join(_params(p))}):\n    return {' + '.join(_params(p)) or 'None'}\n"
        blocks.append(f'@dg.asset(key=["{domain}", "{p.name}"], group_name="{domain}", ins={{{ins}}},{extra}\n)\n' + body)
    spec_extra = ', description="Output port v1.", owners=OWNERS, tags={"mesh/type": "product"}' if rich else ""
    specs = "".join(f'\n        dg.AssetSpec(key=["{d}", "{n}"], group_name="{d}"{spec_extra}),' for d, n in externals)
    helpers = ""
    if rich:
        columns = ", ".join(
            f'dg.TableColumn(name="{c}", type="{t}", description="The {c} of a row.", '
            f'constraints=dg.TableColumnConstraints(nullable={not r}, unique={c == "id"}), tags={{"classification": "internal"}})'
            for c, t, r in COLUMNS
        )
        helpers = textwrap.dedent(
            f'''
            COLUMNS = {[c for c, _, _ in COLUMNS]!r}
            OWNERS = ["team:team-{domain}", "{OWNER}"]
            POLICIES = ["access_level", "columns_classified", "input_ports_granted", "owner_and_purpose", "public_products_have_quality_and_sla", "sensitive_columns_masked"]
            QUOTAS = {{"concurrent_runs": 2, "pool_slots": 2, "max_run_seconds": 14400, "rows_per_publish": 50000000, "bytes_per_publish": 8589934592, "storage_bytes": 107374182400}}
            FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours={SLA_HOURS}), warn_window=timedelta(hours={SLA_HOURS}) * 0.8)
            ON_CRON = dg.AutomationCondition.on_cron("0 2 * * *")


            def _checks(key):
                specs = [dg.AssetCheckSpec("contract_schema", asset=key, blocking=True, description="Columns and types match the contract.")]
                required = {[c for c, _, r in COLUMNS if r]!r}
                specs.append(dg.AssetCheckSpec("required_columns", asset=key, blocking=True, description=f"Required columns have no nulls: {{', '.join(required)}}"))
                specs.append(dg.AssetCheckSpec("id_unique", asset=key, blocking=True, description="id is unique (error)"))
                specs.append(dg.AssetCheckSpec("row_count", asset=key, blocking=True, description="row count mustBeGreaterThan 0 (error)"))
                specs.append(dg.AssetCheckSpec("governance_policies", asset=key, blocking=True, description="The mesh's governance policies hold."))
                specs.append(dg.AssetCheckSpec("quarantine", asset=key, description="Share of source rows quarantined on the way to this product."))
                specs.append(dg.AssetCheckSpec("quota", asset=key, blocking=True, description="The domain's quotas hold for this publish."))
                return specs


            def _description(name):
                return f"Synthetic product {{name}} of {domain}.\\n\\n**Usage:** Benchmarks only.\\n\\nContract `{domain}.{{name}}` v1.0.0 (active)."


            def _metadata(domain, name):
                return {{
                    "dagster/column_schema": dg.TableSchema(columns=[{columns}]),
                    "mesh/contract_id": f"{{domain}}.{{name}}",
                    "mesh/contract_version": "1.0.0",
                    "mesh/port_path": f"{{domain}}/{{name}}/v1",
                    "mesh/port_major": 1,
                    "mesh/contract_file": dg.MetadataValue.path(f"contracts/{{name}}.yaml"),
                    "mesh/policies": dg.MetadataValue.json(POLICIES),
                    "mesh/quotas": dg.MetadataValue.json(QUOTAS),
                }}
            '''
        )
    flavor = "dagster_rich" if rich else "dagster"
    # the rich flavor stands for a team's own Dagster domain with the same products: its assets are
    # pandas functions, so its module imports pandas, as every domain of the platform flavor (and of
    # the demo mesh) does; bare Dagster stays the minimal baseline
    imports = "from datetime import timedelta\n\nimport dagster as dg\nimport pandas as pd\n" if rich else "import dagster as dg\n"
    header = f'"""Synthetic domain {domain} (generated by benchmarks.synthetic_mesh, {flavor} flavor)."""\n\n{imports}'
    names = ", ".join(p.name for p in products)
    sensors = (
        f'\n    sensors=[dg.AutomationConditionSensorDefinition("{domain}_automation", target=dg.AssetSelection.groups("{domain}"), '
        f"default_status=dg.DefaultSensorStatus.STOPPED)],"
        if rich
        else ""
    )
    footer = f"\n\ndefs = dg.Definitions(\n    assets=[{names},{specs}\n    ],{sensors}\n)\n"
    return header + helpers + "\n\n" + "\n\n".join(blocks) + footer


def _grants(domain: str, planned: tuple[Product, ...]) -> str | None:
    """One ``product: "*"`` grant per domain that reads any of ``domain``'s products (as the demo does)."""
    consumers = sorted({p.domain for p in planned for d, _ in p.inputs if d == domain})
    if not consumers:
        return None
    grants = [{"product": "*", "consumer": c, "purpose": f"Synthetic products of {c} read {domain}'s products."} for c in consumers]
    return yaml.safe_dump({"grants": grants}, sort_keys=False)


def _workspace(domains: tuple[str, ...]) -> str:
    entries = [{"python_module": {"module_name": f"{PACKAGE}.{d}.definitions", "location_name": d}} for d in domains]
    return "# Generated by benchmarks.synthetic_mesh: one code location per synthetic domain.\n" + yaml.safe_dump({"load_from": entries}, sort_keys=False)


def generate(root: str | Path, products: int, flavor: str = "platform", domains: int = 20, seed: int = 0) -> SyntheticMesh:
    """Write a synthetic mesh of ``products`` products in ``flavor`` under ``root`` (must be empty or new)."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    root = Path(root)
    names, planned = plan(products, domains, seed=seed)
    (root / PACKAGE).mkdir(parents=True, exist_ok=True)
    (root / PACKAGE / "__init__.py").write_text('"""Synthetic domains."""\n')
    for domain in names:
        folder = root / PACKAGE / domain
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
        mine = [p for p in planned if p.domain == domain]
        if flavor == "platform":
            descriptor = {"name": domain, "kind": "source-aligned" if domain == names[0] else "consumer-aligned",
                          "description": f"Synthetic domain {domain}.", "team": f"Team {domain}", "owners": [f"team:team-{domain}", OWNER]}
            (folder / "domain.yaml").write_text(yaml.safe_dump(descriptor, sort_keys=False))
            (folder / "contracts").mkdir(exist_ok=True)
            for p in mine:
                (folder / "contracts" / f"{p.name}.yaml").write_text(yaml.safe_dump(_contract(p), sort_keys=False))
            grants = _grants(domain, planned)
            if grants:
                (folder / "grants.yaml").write_text(grants)
            source = _platform_module(domain, mine)
        else:
            source = _dagster_module(domain, mine, rich=flavor == "dagster_rich")
        (folder / "definitions.py").write_text(source)
    (root / "workspace.yaml").write_text(_workspace(names))
    return SyntheticMesh(root, flavor, names, planned)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic mesh (see the module docstring).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--flavor", choices=FLAVORS, default="platform")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mesh = generate(args.out, args.products, args.flavor, args.domains, args.seed)
    edges = sum(len(p.inputs) for p in mesh.products)
    print(f"{len(mesh.products)} products, {edges} input ports, {len(mesh.domains)} domains in {mesh.root} ({args.flavor})")


if __name__ == "__main__":
    main()
