"""The mesh as a graph: domains, products, columns, consumers and grants, as JSON and GraphML.

Nodes (``id``, ``type`` and attributes):

- ``domain:<name>`` — kind, team, owners, description;
- ``product:<domain>/<product>`` — contract id and version, status, access level, owners, purpose,
  most sensitive classification, output port URI;
- ``column:<domain>/<product>.<column>`` — logical type, classification, required, primary key, description.

Edges (``source``, ``target``, ``type`` and attributes):

- ``owns`` — domain -> its product;
- ``has_column`` — product -> its column;
- ``feeds`` — producer product -> consumer product: an input port (major, columns, aggregate-only);
- ``reads`` — consumer product -> each producer column its input port reads;
- ``consumes`` — consumer domain -> producer product (one per domain and product, however many ports);
- ``grant`` — producer product -> consumer domain, from the producer's ``grants.yaml`` (purpose,
  expiry, port ``data`` or ``aggregate``, classifications delivered unmasked, privacy budget); a
  ``"*"`` grant gives one edge per product of the producer.

Products and columns come from the contracts (every current contract, so a domain whose code does
not load still shows what it publishes); input ports from the loaded domains; grants from the
grants files. What could not be read is listed under ``problems``, naming file and field.
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from mesh_platform.contracts.registry import ContractRegistry, default_domains_root

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"


def mesh_graph(mesh, root: Path | None = None, *, lake: str) -> dict[str, Any]:
    """The graph of ``mesh`` (a loaded :class:`mesh_platform.mesh.workspace.Mesh`); ``lake``: the mesh's
    lake (the root of the output ports' URIs)."""
    from mesh_platform.contracts.loader import ContractError
    from mesh_platform.products.descriptor import load_descriptor
    from mesh_platform.governance.grants import read_grants
    from mesh_platform.storage.lake import Lake
    from mesh_platform.products.specs import most_sensitive

    root = Path(root) if root else default_domains_root()
    registry = ContractRegistry.discover(root)
    lake = Lake(lake)
    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    problems = [p.__dict__ for p in mesh.problems] + [p.__dict__ for p in registry.problems]

    for loaded in mesh.domains:
        name = loaded.entry.location
        descriptor = loaded.domain.descriptor if loaded.domain is not None else None
        if descriptor is None:
            try:
                descriptor = load_descriptor(root / name / "domain.yaml")
            except ContractError:
                nodes[f"domain:{name}"] = {"id": f"domain:{name}", "type": "domain", "name": name, "loaded": False}
                continue
        nodes[f"domain:{name}"] = {
            "id": f"domain:{name}", "type": "domain", "name": name, "kind": descriptor.kind, "team": descriptor.team,
            "owners": list(descriptor.owners), "description": descriptor.description.strip(), "loaded": loaded.ok,
        }

    products: dict[str, list[str]] = {}
    for c in registry:
        pid = f"product:{c.domain}/{c.name}"
        products.setdefault(c.domain, []).append(pid)
        access = c.custom("accessLevel")
        nodes[pid] = {
            "id": pid, "type": "product", "name": c.name, "domain": c.domain, "contract_id": c.id, "version": c.version,
            "status": c.status, "access_level": None if access is None else str(access), "owners": c.owners,
            "description": c.purpose, "classification": most_sensitive(c.classifications),
            "output_port": lake.uri(f"{c.domain}/{c.name}/v{c.major}"),
        }
        if f"domain:{c.domain}" in nodes:
            edges.append({"source": f"domain:{c.domain}", "target": pid, "type": "owns"})
        for col in c.columns:
            cid = f"column:{c.domain}/{c.name}.{col.name}"
            nodes[cid] = {
                "id": cid, "type": "column", "name": col.name, "product": f"{c.domain}/{c.name}", "logical_type": col.logical_type,
                "classification": col.classification, "required": bool(col.required or col.primary_key),
                "primary_key": col.primary_key, "description": col.description,
            }
            edges.append({"source": pid, "target": cid, "type": "has_column"})

    consumed: set[tuple[str, str]] = set()
    for loaded in mesh.domains:
        if not loaded.ok:
            continue
        published = loaded.domain.products
        for name, ports in sorted(loaded.domain.input_ports.items()):
            # a private intermediate (fraud's model) is no node of the mesh: its reads are its domain's
            consumer = f"product:{loaded.domain.name}/{name}" if name in published else f"domain:{loaded.domain.name}"
            for port in ports:
                try:
                    producer = registry.get(port.product, major=port.major)
                except LookupError as exc:
                    problems.append({"file": str(root / loaded.domain.name), "field": f"{name}.inputs", "message": str(exc)})
                    continue
                source = f"product:{producer.domain}/{producer.name}"
                columns = list(port.columns) if port.columns else producer.column_names
                if name in published:
                    edges.append({"source": source, "target": consumer, "type": "feeds", "major": port.major,
                                  "columns": columns, "aggregate": port.aggregate is not None})
                for col in columns:
                    edges.append({"source": consumer, "target": f"column:{producer.domain}/{producer.name}.{col}", "type": "reads", "major": port.major,
                                  **({} if name in published else {"asset": name})})
                consumed.add((f"domain:{loaded.domain.name}", source))
    for domain, product in sorted(consumed):
        edges.append({"source": domain, "target": product, "type": "consumes"})

    for loaded in mesh.domains:
        producer = loaded.entry.location
        grants_file = read_grants(root / producer)
        if grants_file is None:
            continue
        problems.extend(p.__dict__ for p in grants_file.problems)
        for i, grant in grants_file.entries:
            targets = products.get(producer, []) if grant.product == "*" else [f"product:{producer}/{grant.product}"]
            for target in targets:
                if target not in nodes or f"domain:{grant.consumer}" not in nodes:
                    continue  # a dangling grant: reported by `mesh policies`
                edges.append({
                    "source": target, "target": f"domain:{grant.consumer}", "type": "grant", "purpose": grant.purpose,
                    "expires": grant.expires.isoformat() if grant.expires else None, "port": grant.port,
                    "unmasked": list(grant.unmasked), "epsilon": grant.privacy.epsilon if grant.privacy else None,
                    "grants_file": grants_file.path, "entry": f"grants[{i}]",
                })
    return {"nodes": list(nodes.values()), "edges": edges, "problems": problems}


def _graphml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _graphml_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "double"
    return "string"


def to_graphml(graph: dict[str, Any]) -> bytes:
    """GraphML (directed): one ``<key>`` per attribute, lists as JSON text, missing values left out."""
    ET.register_namespace("", GRAPHML_NS)
    doc = ET.Element(f"{{{GRAPHML_NS}}}graphml")
    keys: dict[tuple[str, str], str] = {}
    for scope, items, skip in (("node", graph["nodes"], {"id"}), ("edge", graph["edges"], {"source", "target"})):
        names = sorted({k for item in items for k in item if k not in skip})
        for name in names:
            key_id = f"{scope[0]}_{name}"
            keys[(scope, name)] = key_id
            ET.SubElement(doc, f"{{{GRAPHML_NS}}}key", {"id": key_id, "for": scope, "attr.name": name,
                                                        "attr.type": _graphml_type([i.get(name) for i in items])})
    g = ET.SubElement(doc, f"{{{GRAPHML_NS}}}graph", {"id": "mesh", "edgedefault": "directed"})
    for node in graph["nodes"]:
        el = ET.SubElement(g, f"{{{GRAPHML_NS}}}node", {"id": node["id"]})
        for name, value in node.items():
            if name != "id" and value is not None:
                ET.SubElement(el, f"{{{GRAPHML_NS}}}data", {"key": keys[("node", name)]}).text = _graphml_value(value)
    for i, edge in enumerate(graph["edges"]):
        el = ET.SubElement(g, f"{{{GRAPHML_NS}}}edge", {"id": f"e{i}", "source": edge["source"], "target": edge["target"]})
        for name, value in edge.items():
            if name not in ("source", "target") and value is not None:
                ET.SubElement(el, f"{{{GRAPHML_NS}}}data", {"key": keys[("edge", name)]}).text = _graphml_value(value)
    ET.indent(doc)
    return ET.tostring(doc, encoding="utf-8", xml_declaration=True)


def _write_atomically(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as an ordinary new file would be
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export(graph: dict[str, Any], out: Path, formats: tuple[str, ...] = ("json", "graphml")) -> list[Path]:
    """Write ``mesh-lineage.json`` and/or ``mesh-lineage.graphml`` into ``out``; each file appears whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    payloads = {}
    if "json" in formats:
        payloads[out / "mesh-lineage.json"] = json.dumps(graph, indent=2).encode()
    if "graphml" in formats:
        payloads[out / "mesh-lineage.graphml"] = to_graphml(graph)
    for path, payload in payloads.items():
        _write_atomically(path, payload)
    return list(payloads)
