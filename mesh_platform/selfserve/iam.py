"""The committed IAM documents (``infra/iam/``) regenerated after a scaffold, as ``mesh iam`` would write them."""

from __future__ import annotations

from pathlib import Path

import yaml

IAM_FOLDER = Path("infra") / "iam"


def iam_lake_uri(folder: Path) -> str | None:
    """The s3:// lake the committed IAM documents in ``folder`` were generated for (read back from them)."""
    for path in sorted(folder.glob("*.json")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
            statement = next(s for s in document["Statement"] if s.get("Sid") == "OwnDomainReadWrite")
            arn = statement["Resource"][0]
        except (OSError, yaml.YAMLError, KeyError, IndexError, StopIteration, TypeError):
            continue
        domain = path.stem
        suffix = f"/{domain}/*"
        if arn.startswith("arn:aws:s3:::") and arn.endswith(suffix):
            return "s3://" + arn[len("arn:aws:s3:::") : -len(suffix)]
    return None


def refresh_iam(root: Path, domains: list[str]) -> list[Path]:
    """Regenerate the committed IAM documents (``infra/iam/<domain>.json``) of ``domains``, as `mesh iam` would.

    Only when the project keeps them (``infra/iam/`` exists) and their lake can be read back from them.
    A domain that does not load is skipped (``mesh validate`` reports it).
    """
    import json

    from mesh_platform.deployment.iam import policies_for
    from mesh_platform.mesh.workspace import Mesh, load_domain, read_workspace

    folder = root / IAM_FOLDER
    lake = iam_lake_uri(folder) if folder.is_dir() else None
    if lake is None:
        return []
    workspace = root / "workspace.yaml"
    entries = [e for e in read_workspace(workspace) if e.location in domains]
    mesh = Mesh(workspace, [load_domain(e, root) for e in entries])
    written = []
    for name, document in sorted(policies_for(mesh, lake).items()):
        # mesh-serve reads every output port of the mesh and mesh-reports every product's quality
        # reports (from the contracts, not the loaded domains): a new product changes them too
        if name in domains or name in ("mesh-serve", "mesh-reports"):
            path = folder / f"{name}.json"
            path.write_text(json.dumps(document, indent=2) + "\n")
            written.append(path)
    return written
