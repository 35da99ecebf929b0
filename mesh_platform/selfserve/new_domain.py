"""``mesh new domain NAME``: the domain package, its test, and its entries in ``workspace.yaml`` and ``dg.toml``.

Writes ``domain.yaml``, ``contracts/``, ``grants.yaml``, ``definitions.py`` and ``dg.toml`` under
``domains/<name>/``, a test for it (``tests/domains/test_<name>.py``) and, when the project keeps
generated IAM policies in ``infra/iam/``, the new domain's policy document
(:func:`mesh_platform.selfserve.iam.refresh_iam`).
"""

from __future__ import annotations

from pathlib import Path

from mesh_platform.foundations.problems import ContractError, display_path
from mesh_platform.governance.grants import GRANTS_FILE
from mesh_platform.selfserve.changes import KINDS, Changes, ScaffoldError, check_identifier, read_text
from mesh_platform.selfserve.templates import DEFINITIONS_PY, DG_ENV, DG_TOML, DOMAIN_TEST, DOMAIN_YAML, GRANTS_YAML, yaml_flow, yaml_scalar


def _workspace_entry(text: str, name: str) -> str:
    entry = f"  - python_module:\n      module_name: domains.{name}.definitions\n      location_name: {name}\n"
    return text + ("" if text.endswith("\n") or not text else "\n") + entry


def _dg_entry(text: str, name: str) -> str:
    return text + ("" if text.endswith("\n") else "\n") + f'\n[[workspace.projects]]\npath = "domains/{name}"\n'


def workspace_locations(path: Path) -> set[str]:
    from mesh_platform.mesh.workspace import read_workspace

    try:
        return {e.location for e in read_workspace(path)}
    except ContractError as exc:
        raise ScaffoldError(str(exc)) from None


def new_domain(root: Path, name: str, *, kind: str, team: str, owners: list[str], description: str | None = None) -> Changes:
    """The changes that add domain ``name`` to the project at ``root`` (call ``.apply()`` to write them)."""
    check_identifier("domain", name)
    if kind not in KINDS:
        raise ScaffoldError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if not team or not team.strip():
        raise ScaffoldError("a domain needs a team (--team)")
    owners = [o.strip() for o in owners if o and o.strip()]
    if not owners:
        raise ScaffoldError("a domain needs at least one owner (--owner team:... or an e-mail address); owners approve grants on its products")
    folder = root / "domains" / name
    if folder.exists():
        raise ScaffoldError(f"domain {name!r} already exists ({display_path(folder)})")
    workspace = root / "workspace.yaml"
    if not workspace.exists():
        raise ScaffoldError(f"no workspace.yaml in {root}: run this from the mesh project's root")
    if name in workspace_locations(workspace):
        raise ScaffoldError(f"{display_path(workspace)} already has a code location {name!r}")
    description = " ".join((description or f"The {team} team's data products.").split())
    changes = Changes(root)
    changes.create = {
        folder / "__init__.py": "",
        folder / "domain.yaml": DOMAIN_YAML.format(name=name, kind=kind, description=description, team=yaml_scalar(team), owners=yaml_flow(owners)),
        folder / "contracts" / "README.md": f"One ODCS v3.1 contract per product of {name}: `<product>.yaml` (`mesh new product {name} NAME --input ...`).\n",
        folder / GRANTS_FILE: GRANTS_YAML.format(name=name),
        folder / "definitions.py": DEFINITIONS_PY.format(name=name, kind=kind, team=team),
        folder / "dg.toml": DG_TOML.format(name=name),
        folder / ".env": DG_ENV,
        root / "tests" / "domains" / f"test_{name}.py": DOMAIN_TEST.format(name=name),
    }
    for path in changes.create:
        if path.exists():
            raise ScaffoldError(f"{display_path(path)} already exists")
    changes.replace[workspace] = _workspace_entry(read_text(workspace), name)
    dg_toml = root / "dg.toml"
    if dg_toml.exists():
        changes.replace[dg_toml] = _dg_entry(read_text(dg_toml), name)
    changes.notes.append(f"next: mesh new product {name} PRODUCT --input PRODUCER.PRODUCT[@MAJOR]")
    return changes
