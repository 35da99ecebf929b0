"""Settings are chosen once per entry point and passed down: one process can hold two meshes.

The entry points (the `mesh` command, a code location's ``Domain.settings``, the privacy service's
``main``) read the environment; nothing below them re-derives the home, the lake, the sources or
the Dagster home. So two domains built in one process over two different ``MeshSettings`` publish
each into its own lake, keep their masking keys in their own homes, and send their lineage events
to their own homes, whatever the environment says.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from deltalake import DeltaTable

from mesh_platform import Domain
from mesh_platform.contracts.registry import ContractRegistry
from mesh_platform.foundations.settings import MeshSettings

PLATFORM = Path(__file__).resolve().parents[1] / "mesh_platform"
FIXTURE = Path(__file__).parent / "fixtures" / "quality_mesh"
PATHS = ("MESH_HOME", "MESH_LAKE", "MESH_SOURCES", "DAGSTER_HOME")


def _below_entry_points() -> list[Path]:
    """The platform's modules but settings.py (where settings are read) and the command line."""
    return [p for p in sorted(PLATFORM.rglob("*.py")) if p.name != "settings.py" or p.parent != PLATFORM
            if "cli" not in p.relative_to(PLATFORM).parts[:1]]


def _from_env_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_env"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "MeshSettings"]


def test_settings_are_read_at_no_more_than_two_entry_points_outside_the_command_line():
    found = [f"{p.relative_to(PLATFORM.parent)}:{line}" for p in _below_entry_points() for line in _from_env_calls(p)]
    assert len(found) <= 2, f"MeshSettings.from_env() outside settings.py and the CLI (at most 2, at entry points): {found}"


def test_no_module_below_the_entry_points_reads_the_mesh_paths_from_the_environment():
    """``os.environ[...]``, ``os.environ.get(...)`` or ``os.getenv(...)`` of a mesh path (a write, for a
    child process's environment, is no read)."""
    reads = []
    for path in _below_entry_points():
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
                name = node.slice.value if isinstance(node.slice, ast.Constant) else None
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
                name = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
            if name in PATHS:
                reads.append(f"{path.relative_to(PLATFORM.parent)}:{node.lineno} reads {name}")
    assert not reads, reads


def _settings(root: Path) -> MeshSettings:
    """A mesh of its own under ``root``, built explicitly (not from this process's environment)."""
    return MeshSettings.from_env(environ={"MESH_HOME": str(root / "home"), "MESH_QUALITY_REPORTS": "0"})


def _shop(settings: MeshSettings, orders: pd.DataFrame) -> dg.Definitions:
    """The quality fixture's domain in the mesh of ``settings``, its ``orders`` product returning ``orders``."""
    domain = Domain.load(FIXTURE / "shop" / "definitions.py", settings)

    @domain.product("orders")
    def orders_() -> pd.DataFrame:
        return orders

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("status").size().rename("orders").reset_index()

    return domain.definitions(registry=ContractRegistry.discover(FIXTURE))


def _complete_sensor(defs: dg.Definitions, instance, run_id: str) -> None:
    """Evaluate the domain's lineage sensor on its successful run, as the daemon would."""
    sensor = defs.resolve_sensor_def("shop_lineage_complete")
    event = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
    context = dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_instance=instance,
                                                 dagster_run=instance.get_run_by_id(run_id), dagster_event=event)
    assert sensor(context) is None


def test_one_process_builds_and_materializes_two_meshes_each_into_its_own_lake(tmp_path, monkeypatch):
    from mesh_platform.lineage.emit import read_events

    monkeypatch.setenv("MESH_DOMAINS", str(FIXTURE))
    for var in [k for k in os.environ if k.startswith("OPENLINEAGE") or k == "MESH_LINEAGE_FILE"]:
        monkeypatch.delenv(var)  # the events' default file: in each mesh's home
    monkeypatch.setenv("MESH_LINEAGE", "on")
    # the environment names a third lake: neither mesh may write there
    monkeypatch.setenv("MESH_LAKE", str(tmp_path / "environment-lake"))
    first, second = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    assert first.lake != second.lake and first.home != second.home

    orders_a = pd.DataFrame({"order_id": ["O-1", "O-2", "O-3"], "status": ["open", "shipped", "open"],
                             "amount": [10.0, 20.0, 30.0], "coupon": [None, None, "X"]})
    orders_b = pd.DataFrame({"order_id": ["O-7", "O-8"], "status": ["cancelled", "cancelled"],
                             "amount": [70.0, 80.0], "coupon": [None, None]})
    defs_a, defs_b = _shop(first, orders_a), _shop(second, orders_b)
    assert defs_a.resolve_all_asset_specs()  # both code locations load side by side

    with dg.instance_for_test() as instance:
        runs = {}
        for name, defs in (("a", defs_a), ("b", defs_b)):
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
            assert result.success, name
            runs[name] = result.run_id
            _complete_sensor(defs, instance, result.run_id)

    def published(settings: MeshSettings, product: str) -> pd.DataFrame:
        return DeltaTable(str(Path(settings.lake) / "shop" / product / "v1")).to_pandas()

    assert sorted(published(first, "orders")["order_id"]) == ["O-1", "O-2", "O-3"]
    assert sorted(published(second, "orders")["order_id"]) == ["O-7", "O-8"]
    stats_a, stats_b = published(first, "order_stats"), published(second, "order_stats")
    assert dict(zip(stats_a["status"], stats_a["orders"])) == {"open": 2, "shipped": 1}
    assert dict(zip(stats_b["status"], stats_b["orders"])) == {"cancelled": 2}
    assert not (tmp_path / "environment-lake").exists()
    # each mesh's lineage went to its own home, naming its own lake
    for name, settings in (("a", first), ("b", second)):
        events = read_events(Path(settings.home) / "lineage" / "events.jsonl")
        assert [e["eventType"] for e in events] == ["START", "COMPLETE"] and events[0]["run"]["runId"] == runs[name]
        outputs = {o["name"] for o in events[-1]["outputs"]}
        assert str(Path(settings.lake) / "shop" / "orders" / "v1") in outputs


def test_each_mesh_keeps_its_masking_key_and_privacy_ledger_in_its_own_home(tmp_path, monkeypatch):
    from mesh_platform.governance.masking import masking_key
    from mesh_platform.governance.privacy import ledger_url
    from mesh_platform.storage.io_manager import MeshIOManager
    from mesh_platform.foundations.launch_env import started_with

    if started_with("MESH_MASKING_KEY"):
        pytest.skip("this process was started with MESH_MASKING_KEY: no key is kept in a home")
    monkeypatch.delenv("MESH_PRIVACY_LEDGER", raising=False)
    first, second = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    assert masking_key(first.home) != masking_key(second.home)
    assert (Path(first.home) / "masking.key").exists() and (Path(second.home) / "masking.key").exists()
    assert ledger_url(first.home) != ledger_url(second.home)
    # the IO manager a code location gets carries its mesh's lake and home, nothing from the environment
    io = MeshIOManager(domain="shop", lake=first.lake, home=first.home)
    assert io._lake().root == first.lake and io._ledger() == ledger_url(first.home)
    with pytest.raises(ValueError, match="has no lake"):
        MeshIOManager(domain="shop")._lake()
