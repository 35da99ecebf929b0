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
    # 0: foundations, and what needs nothing of the platform above them
    {"foundations", "foundations.problems", "foundations.launch_env", "foundations.safe_yaml", "foundations.settings", "foundations.sql", "foundations.text", "foundations.metadata",
     "storage.lake", "storage.delta", "storage.gate", "storage.lookup", "foundations.scratch_db", "governance.identity", "sources.simulation", "sources.simulation.insurance", "sources.landed", "contracts.model", "products.partitions"},
    # 1: contracts (no Dagster), a domain's descriptor and its SLA-driven automation
    {"contracts", "contracts.loader", "contracts.registry", "contracts.enforcement", "contracts.diff", "contracts.versioning", "contracts.impact", "products.automation", "products.descriptor"},
    # 2: governance decisions
    {"governance", "governance.grants", "governance.access", "governance.masking", "governance.privacy", "governance.policies", "governance.audit"},
    # 3: the read and publish path, quality, quotas, private storage, what the UI shows
    {"storage", "storage.publishing", "storage.io_manager", "storage.versions", "storage.retention", "governance.quotas",
     "quality", "quality.checks", "quality.results", "quality.rules", "quality.evaluate", "quality.gx", "quality.deferred", "quality.quarantine", "quality.reports",
     "products", "products.ports", "products.private", "products.specs", "products.declarations", "lineage.columns", "dbt.contracts", "dbt.sql_lineage"},
    # 4: a domain's plan and its Dagster definitions; lineage events
    {"", "products.plan", "products.build", "products.domain", "dbt", "dbt.plan", "dbt.project", "dbt.specs", "dbt.assets", "lineage", "lineage.events", "lineage.emit", "lineage.sensors", "lineage.graph"},
    # 5: sources, the mesh as a whole, serving, deployment, self-serve and the command line
    {"sources", "sources.systems", "sources.s3", "sources.landing_sensor",
     "mesh", "mesh.workspace", "mesh.instance", "mesh.materialize", "mesh.submission", "mesh.run_cleanup", "mesh.catalog", "mesh.validation", "mesh.consumers", "mesh.search", "mesh.usage", "mesh.devserver",
     "serving", "serving.tokens", "serving.limits", "serving.audit", "serving.sql", "serving.service", "serving.http", "serving.flight", "serving.client", "serving.run",
     "deployment", "deployment.iam", "deployment.helm", "deployment.run_pods", "deployment.privacy_service", "deployment.s3_server", "deployment.instance_storage", "deployment.run_preload", "deployment.code_server",
     "deployment.stack", "deployment.stack.layout", "deployment.stack.processes", "deployment.stack.postgres", "deployment.stack.webserver", "deployment.stack.identities", "deployment.stack.lifecycle", "deployment.stack.probe",
     "selfserve", "selfserve.changes", "selfserve.templates", "selfserve.new_domain", "selfserve.new_product", "selfserve.iam",
     "cli", "cli.__main__", "cli.common", "cli.run", "cli.explore", "cli.governance", "cli.dbt", "cli.selfserve", "cli.contract", "cli.stack", "cli.helm", "cli.serve"},
]
NO_DAGSTER = {"contracts", "contracts.loader", "contracts.registry", "contracts.enforcement", "contracts.diff", "contracts.versioning", "contracts.impact", "contracts.model",
              "governance.grants", "governance.access", "governance.masking", "governance.privacy", "governance.policies", "products.private",
              "foundations.problems", "foundations.launch_env", "foundations.safe_yaml", "foundations.text", "sources.landed"}


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
            if node.module.split(".")[0] == "mesh_platform":
                # `from mesh_platform.storage import delta` depends on storage.delta, not on the package
                for a in node.names:
                    sub = ROOT.parent.joinpath(*node.module.split("."), a.name)
                    found.add(f"{node.module}.{a.name}" if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists() else node.module)
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


def _graph() -> dict[str, set[str]]:
    known = {_module(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        edges = set()
        for name in _imports(path):
            if name.split(".")[0] != "mesh_platform":
                continue
            target = name.removeprefix("mesh_platform").lstrip(".")
            while target not in known:  # `mesh_platform.x.y.Name` imported as a module path: the module
                target = target.rpartition(".")[0]
            edges.add(target)
        graph[_module(path)] = edges - {_module(path)}
    return graph


def test_no_import_cycle():
    """No two modules import each other, directly or around a loop (lazy imports count: they are still dependencies)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(f"mesh_platform.{m}" for m in c) for c in cycles)
