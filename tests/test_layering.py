"""The platform's module map (docs/architecture.md) holds: each module imports only its layer and below.

Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted; imports
inside functions are (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mesh_platform"

LAYERS = [
    # 0: foundations, no platform imports beyond this layer
    {"problems", "launch_env", "safe_yaml", "settings", "sql", "text", "metadata", "io.lake", "io.delta", "io.gate", "governance.identity", "simulation", "simulation.insurance", "contracts.model", "partitions"},
    # 1: contracts (no Dagster) and SLA-driven automation
    {"contracts", "contracts.loader", "contracts.registry", "contracts.enforcement", "contracts.diff", "contracts.versioning", "contracts.impact", "automation", "descriptor"},
    # 2: governance decisions
    {"governance", "governance.grants", "governance.access", "governance.masking", "governance.privacy", "governance.policies", "governance.audit"},
    # 3: the read and publish path, quality, private storage, what the UI shows
    {"ports", "io", "io.publishing", "io.io_manager", "io.versions", "quality", "quality.rules", "quality.evaluate", "quality.gx", "quality.deferred", "quarantine", "private", "specs", "dbt.contracts", "declarations", "quotas", "reports", "retention", "column_lineage", "dbt.sql_lineage"},
    # 4: a domain's plan and its Dagster definitions
    {"plan", "products", "dbt", "dbt.plan", "dbt.project", "dbt.assets", "domain", "", "lineage", "lineage.events", "lineage.emit", "lineage.sensors", "lineage.graph"},
    # 5: the mesh as a whole and the command line
    {"workspace", "materialize", "submission", "catalog", "iam", "validation", "instance", "sources", "sensors", "cli", "cli.__main__", "search", "devserver", "usage", "scaffold", "cli.selfserve", "helm", "run_pods", "run_cleanup", "stack", "cli.helm", "cli.stack", "io.s3", "s3_server", "stack_identities", "storage_probe", "privacy_service", "consumers", "cli.contract",
     "serving", "serving.tokens", "serving.limits", "serving.audit", "serving.sql", "serving.service", "serving.http", "serving.flight", "serving.client", "serving.run", "cli.serve"},
]
NO_DAGSTER = {"contracts", "contracts.loader", "contracts.registry", "contracts.enforcement", "contracts.diff", "contracts.versioning", "contracts.impact", "contracts.model",
              "governance.grants", "governance.access", "governance.masking", "governance.privacy", "governance.policies", "private", "problems", "launch_env", "safe_yaml", "text"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mesh_platform":
                found |= {f"mesh_platform.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _layer(module: str) -> int:
    for number, members in enumerate(LAYERS):
        if module in members:
            return number
    raise AssertionError(f"mesh_platform.{module} is in no layer: add it to docs/architecture.md and to LAYERS here")


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[_module(p) or "mesh_platform" for p in MODULES])
def test_module_imports_only_its_layer_and_below(path):
    module = _module(path)
    layer = _layer(module)
    upward = []
    for name in _imports(path):
        if name == "dagster" or name.startswith("dagster."):
            assert module not in NO_DAGSTER, f"mesh_platform.{module} must not import Dagster"
        if not name.startswith("mesh_platform"):
            continue
        target = name.removeprefix("mesh_platform").lstrip(".")
        if target and _layer(target) > layer:
            upward.append(name)
    assert not upward, f"mesh_platform.{module} (layer {layer}) imports a higher layer: {', '.join(sorted(upward))}"
