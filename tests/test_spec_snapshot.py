"""What the Dagster UI shows of every asset, per domain, as a reviewed snapshot.

Every resolved asset spec of every domain (key, deps, group, kinds, owners, tags, metadata keys and
the values that identify the product, check names and whether they block, automation condition,
freshness) is compared with ``tests/snapshots/specs/<domain>.json``. A change to what the UI shows
is then a diff in review, not a surprise. After an intended change, regenerate with::

    MESH_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_spec_snapshot.py

and read the diff before committing it. Machine-dependent values (file paths, hashes in code
versions) are left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from mesh_platform.mesh.workspace import Mesh

SNAPSHOTS = Path(__file__).parent / "snapshots" / "specs"
STABLE_VALUES = ("mesh/contract_id", "mesh/port_major", "mesh/contract_version", "mesh/port_path", "mesh/private", "mesh/policies", "mesh/partitioning", "dagster/column_schema")


def _value(value):
    if isinstance(value, dg.TableSchema):
        return [
            " ".join([c.name, c.type, "nullable" if c.constraints.nullable else "required", *(["unique"] if c.constraints.unique else []), *(f"{k}={v}" for k, v in sorted((c.tags or {}).items()))])
            for c in value.columns
        ]
    if isinstance(value, dg.JsonMetadataValue):
        return value.data
    if isinstance(value, dg.TableSchemaMetadataValue):
        return _value(value.schema)
    return value


def _automation(condition) -> str | None:
    if condition is None:
        return None
    return condition.get_label() or type(condition).__name__


def snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            out[key.to_user_string()] = {"external": True, "group": node.group_name}
            continue
        metadata = node.metadata
        out[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": list(node.owners),
            "tags": dict(sorted(node.tags.items())),
            "metadata_keys": sorted(metadata),
            "metadata": {k: _value(metadata[k]) for k in STABLE_VALUES if k in metadata},
            "code_version_prefix": (node.code_version or "").rsplit("-", 1)[0] if "-" in (node.code_version or "") else None,
            "checks": {c.name: "blocking" if graph.get_check_spec(c).blocking else "warning" for c in sorted(node.check_keys, key=lambda c: c.name)},
            "automation": _automation(node.automation_condition),
            "freshness": repr(node.freshness_policy) if getattr(node, "freshness_policy", None) is not None else None,
            "description_start": (node.description or "").split("\n", 1)[0],
            "partitions": str(node.partitions_def) if node.partitions_def is not None else None,
        }
    return out


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    loaded = Mesh.load()
    assert not loaded.problems, loaded.problems
    return loaded


@pytest.mark.parametrize("domain", ["policies", "claims", "customer_care", "fraud", "analytics"])
def test_resolved_specs_match_the_snapshot(mesh, domain):
    current = json.loads(json.dumps(snapshot(mesh.get(domain).defs), default=str))
    path = SNAPSHOTS / f"{domain}.json"
    if os.environ.get("MESH_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot {path}: run with MESH_UPDATE_SNAPSHOTS=1 and review it"
    expected = json.loads(path.read_text())
    for key in sorted(set(expected) | set(current)):
        assert current.get(key) == expected.get(key), f"{domain}: asset {key} differs from {path.name}"
