"""``mesh new product DOMAIN NAME --input PRODUCER.PRODUCT[@MAJOR][:col,col]``: a contract, a transform, a test, grant requests.

The contract's schema starts from the chosen input columns (copied from the producers' contracts,
with their classification and masking); the transform that satisfies it is appended to the domain's
``definitions.py``; a test checks the transform against the contract; and a **pending** grant
request goes into each producer's ``grants.yaml``: it gives no access until the producer's owners
approve it (``mesh grants approve PRODUCER CONSUMER``; ``mesh validate`` lists what is pending and
who approves).

Everything is checked before anything is written: a name that is not an identifier, an existing
product, an unknown input product or major, a missing producer or an unknown column is a
:class:`~mesh_platform.selfserve.changes.ScaffoldError` naming what is wrong, and the project is left
as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from mesh_platform.contracts.registry import ContractRegistry, MajorNotServed
from mesh_platform.foundations import safe_yaml
from mesh_platform.foundations.problems import ContractError, display_path
from mesh_platform.governance.access import access_level
from mesh_platform.governance.access import owners as domain_owners
from mesh_platform.governance.grants import GRANTS_FILE, find_grant, parse_grants
from mesh_platform.governance.masking import sensitive_columns, treatment
from mesh_platform.selfserve.changes import Changes, ScaffoldError, check_identifier, read_text
from mesh_platform.selfserve.templates import PRODUCT_TEST, sample_value, samples_literal, yaml_scalar

_INPUT = re.compile(r"^(?P<producer>[^.@:\s]+)\.(?P<product>[^.@:\s]+)(?:@(?P<major>[^:\s]+))?(?::(?P<columns>\S+))?$")


@dataclass
class _Input:
    producer: str
    product: str
    major: int
    columns: list[str]
    param: str
    contract: object  # Contract
    properties: list[dict]  # the columns' raw ODCS properties, as the producer wrote them


def _parse_inputs(specs: list[str], registry: ContractRegistry, domains: Path, consumer: str, expires: date | None = None) -> list[_Input]:
    parsed: list[_Input] = []
    for spec in specs:
        m = _INPUT.match(spec.strip())
        if not m:
            raise ScaffoldError(f"--input {spec!r}: write PRODUCER.PRODUCT, optionally @MAJOR and :col1,col2 (e.g. policies.policies@1:policy_id,sum_insured)")
        producer, product = m["producer"], m["product"]
        if producer == consumer:
            raise ScaffoldError(f"--input {spec!r}: a domain reads its own products directly, not through an input port")
        if not (domains / producer / "domain.yaml").exists():
            known = sorted(p.name for p in domains.iterdir() if (p / "domain.yaml").exists())
            raise ScaffoldError(f"--input {spec!r}: there is no producer domain {producer!r} (domains: {', '.join(known)})")
        try:
            current = registry.get(f"{producer}.{product}")
        except LookupError as exc:
            raise ScaffoldError(f"--input {spec!r}: {exc.args[0] if exc.args else exc}") from None
        if m["major"] is not None and not m["major"].isdigit():
            raise ScaffoldError(f"--input {spec!r}: major {m['major']!r} must be a number (e.g. @1)")
        major = int(m["major"]) if m["major"] is not None else current.major
        try:
            contract = registry.get(current.id, major)
        except MajorNotServed as exc:
            raise ScaffoldError(f"--input {spec!r}: {exc}") from None
        names = contract.column_names
        columns = [c for c in m["columns"].split(",") if c] if m["columns"] else list(names)
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ScaffoldError(f"--input {spec!r}: {contract.id} v{major} has no column(s) {', '.join(unknown)} (columns: {', '.join(names)})")
        if access_level(contract) == "restricted" and expires is None:
            raise ScaffoldError(f"--input {spec!r}: {contract.id} is restricted: its grant needs an expiry (--expires YYYY-MM-DD)")
        raw = safe_yaml.load_file(contract.source, display_path(contract.source), "contract")
        table = next(iter(raw.get("schema") or []), {}) if isinstance(raw, dict) else {}
        props = {p.get("name"): p for p in table.get("properties") or [] if isinstance(p, dict)}
        chosen = []
        for c in columns:  # what a consumer without a grant that unmasks them receives of sensitive columns
            how = treatment(contract.column(c)) if c in sensitive_columns(contract) else None
            if how == "remove":
                raise ScaffoldError(
                    f"--input {spec!r}: column {c} ({contract.column(c).classification}) is removed for consumers not cleared for it; "
                    f"leave it out of the :columns, or ask {producer!r} for a grant that unmasks it"
                )
            prop = dict(props[c])
            if how == "pseudonymize":  # arrives as a keyed hash: a string, still personal data
                prop = {k: v for k, v in prop.items() if k not in ("logicalTypeOptions", "examples", "physicalType")}
                prop["logicalType"] = "string"
                prop["description"] = (str(prop.get("description") or "").rstrip() + f" Pseudonymized (keyed hash) as read from {contract.id}.").strip()
            chosen.append(prop)
        parsed.append(_Input(producer, product, major, columns, product, contract, chosen))
    clashes = {i.param for i in parsed if sum(j.param == i.param for j in parsed) > 1}
    for i in parsed:
        if i.param in clashes:
            i.param = f"{i.producer}_{i.product}"
    if len({i.param for i in parsed}) != len(parsed):
        raise ScaffoldError("the same input port is given twice")
    return parsed


def _column(prop: dict, keep: str) -> dict:
    """A producer's column as the new product's: ``all`` its constraints (one input), ``required`` only
    (first of several inputs: a join may repeat its rows), or ``none`` (joined in: may be missing)."""
    drop = {"relationships", "quality"}
    if keep != "all":
        drop |= {"primaryKey", "primaryKeyPosition", "unique"}
    if keep == "none":
        drop |= {"required"}
    return {k: v for k, v in prop.items() if k not in drop}


def _contract(domain: str, name: str, descriptor: dict, inputs: list[_Input], purpose: str) -> dict:
    # one input whose whole primary key is chosen keeps its keys; otherwise rows may repeat
    single = len(inputs) == 1 and set(inputs[0].contract.primary_key) <= set(inputs[0].columns)
    seen: set[str] = set()
    properties = []
    for n, i in enumerate(inputs):
        for prop in i.properties:
            if prop["name"] in seen:
                continue
            seen.add(prop["name"])
            # several inputs: the first input's rows, the others' columns joined on what they share
            properties.append(_column(prop, "all" if single else "required" if n == 0 else "none"))
    owners = descriptor.get("owners") or []
    members = [{"username": o, "role": "owner"} for o in owners if "@" in str(o)] or [{"username": str(owners[0]), "role": "owner"}]
    sources = ", ".join(f"{i.contract.id} v{i.major}" for i in inputs)
    return {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": f"{domain}.{name}",
        "name": name,
        "version": "1.0.0",
        "status": "active",
        "domain": domain,
        "description": {
            "purpose": purpose,
            "usage": f"Built from {sources}. Generated by `mesh new product`: describe how to use it.",
        },
        "schema": [
            {
                "name": name,
                "physicalType": "table",
                "description": f"Starts from the columns of {sources}.",
                "properties": properties,
                "quality": [{"metric": "rowCount", "mustBeGreaterThan": 0, "dimension": "completeness", "severity": "error"}],
            }
        ],
        "team": {"name": descriptor.get("team") or domain, "members": members},
        "customProperties": [{"property": "accessLevel", "value": "internal"}],
    }


def _transform(name: str, inputs: list[_Input], columns: list[str], purpose: str) -> str:
    ports = "\n".join(
        f'        "{i.param}": InputPort("{i.contract.id}", major={i.major}, columns={i.columns!r}, purpose={purpose!r}),' for i in inputs
    )
    params = ", ".join(f"{i.param}: pd.DataFrame" for i in inputs)
    first = inputs[0]
    body = [f"    result = {first.param}"]
    have = set(first.columns)
    for i in inputs[1:]:
        shared = [c for c in i.columns if c in have]
        body.append(f"    result = result.merge({i.param}, on={shared!r}, how=\"left\")")
        have |= set(i.columns)
    body.append(f"    return result[{columns!r}]")
    return (
        f"\n\n@domain.product(\n    \"{name}\",\n    inputs={{\n{ports}\n    }},\n)\n"
        f"def {name}({params}) -> pd.DataFrame:\n"
        f'    """{purpose} (Generated by `mesh new product`: replace the body with the product\'s logic.)"""\n'
        + "\n".join(body) + "\n"
    )


def _insert_product(definitions: str, block: str, path: Path) -> str:
    lines = definitions.splitlines(keepends=True)
    at = next((n for n in range(len(lines) - 1, -1, -1) if re.match(r"^defs\s*=", lines[n])), None)
    if at is None:
        raise ScaffoldError(f"{display_path(path)}: no `defs = domain.definitions(...)` line to add the product before")
    head, tail = "".join(lines[:at]).rstrip("\n") + "\n", "".join(lines[at:])
    imports = ""
    if not re.search(r"^import pandas as pd\b", definitions, re.M):
        imports += "import pandas as pd\n"
    if not re.search(r"^from mesh_platform import .*\bInputPort\b", definitions, re.M):
        imports += "from mesh_platform import InputPort\n"
    return head + ("\n" + imports if imports else "") + block + "\n\n" + tail


def _grant_request(text: str, producer_path: Path, product: str, consumer: str, purpose: str, approvers: list[str], expires: date | None = None) -> str:
    """``text`` (a grants file) with a pending request appended; checked by parsing the result."""
    shown = display_path(producer_path)
    if not text.strip():
        text = "grants:\n"
    try:
        raw = yaml.safe_load(text)  # the producer's file was already read through safe_yaml by the registry checks
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"{shown}: cannot be read: {exc}") from None
    if raw is not None and not (isinstance(raw, dict) and (raw.get("grants") is None or isinstance(raw.get("grants"), list))):
        raise ScaffoldError(f"{shown}: not a grants file this command can add to (a mapping with a `grants` list)")
    lines = text.splitlines(keepends=True)
    top = next((n for n, line in enumerate(lines) if re.match(r"^grants:", line)), None)
    if top is None:
        lines.append("grants:\n")
    elif re.match(r"^grants:\s*\[\s*\]\s*(#.*)?$", lines[top].rstrip("\n")):
        lines[top] = "grants:\n"
    entry = re.search(r"^(\s*)- ", "".join(lines[(top or 0) + 1 :]), re.M)
    pad = entry.group(1) if entry else "  "
    before = len((raw or {}).get("grants") or [])
    body = "".join(lines)
    body += ("" if body.endswith("\n") else "\n") + (
        f"{pad}- product: {product}\n"
        f"{pad}  consumer: {consumer}\n"
        f"{pad}  purpose: {yaml_scalar(purpose)}\n"
        + (f"{pad}  expires: {expires.isoformat()}\n" if expires else "")
        +         f"{pad}  status: pending  # requested {date.today().isoformat()} by `mesh new product`; approvers: {', '.join(approvers) or 'the owners of this domain'}\n"
    )
    parsed = parse_grants(yaml.safe_load(body), shown)
    if len(parsed.grants) != before + 1 or not parsed.grants[-1].pending or parsed.problems:
        raise ScaffoldError(f"{shown}: could not add a grant request to this file's layout; add it by hand")
    return body


def new_product(root: Path, domain: str, name: str, inputs: list[str], *, purpose: str | None = None, expires: str | date | None = None) -> Changes:
    """The changes that add product ``name`` to ``domain`` reading ``inputs`` (call ``.apply()`` to write them)."""
    check_identifier("product", name)
    domains = root / "domains"
    folder = domains / domain
    if not (folder / "domain.yaml").exists():
        raise ScaffoldError(f"there is no domain {domain!r} ({display_path(folder / 'domain.yaml')} not found); create it with `mesh new domain {domain}`")
    if not inputs:
        raise ScaffoldError("a new product needs at least one --input PRODUCER.PRODUCT[@MAJOR] to start its schema from")
    contract_path = folder / "contracts" / f"{name}.yaml"
    if contract_path.exists():
        raise ScaffoldError(f"domain {domain!r} already has a product {name!r} ({display_path(contract_path)})")
    definitions_path = folder / "definitions.py"
    definitions = read_text(definitions_path)
    if re.search(rf"^def {name}\(|[\"']{name}[\"']", definitions, re.M):
        raise ScaffoldError(f"{display_path(definitions_path)} already declares {name!r}")
    test_path = root / "tests" / "domains" / f"test_{domain}_{name}.py"
    if test_path.exists():
        raise ScaffoldError(f"{display_path(test_path)} already exists")
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            raise ScaffoldError(f"--expires {expires!r} must be an ISO date (YYYY-MM-DD)") from None
    if expires is not None and expires <= date.today():
        raise ScaffoldError(f"--expires {expires.isoformat()} is not in the future")
    registry = ContractRegistry.discover(domains)
    parsed = _parse_inputs(inputs, registry, domains, domain, expires)
    try:
        descriptor = safe_yaml.load_file(folder / "domain.yaml", display_path(folder / "domain.yaml"), "domain descriptor") or {}
    except ContractError as exc:
        raise ScaffoldError(str(exc)) from None
    purpose = " ".join((purpose or f"{name.replace('_', ' ').capitalize()} for the {domain} domain.").split())
    if len(purpose) < 3:
        raise ScaffoldError("--purpose must say what the product is for")
    for n, i in enumerate(parsed[1:], 1):
        earlier = {c for j in parsed[:n] for c in j.columns}
        if not earlier & set(i.columns):
            raise ScaffoldError(
                f"--input {i.contract.id}: shares no column with the inputs before it, so the generated transform cannot join it; "
                f"include a key column (e.g. one of {', '.join(parsed[0].columns[:3])}) in its :columns"
            )
    contract = _contract(domain, name, descriptor, parsed, purpose)
    columns = [p["name"] for p in contract["schema"][0]["properties"]]
    changes = Changes(root)
    changes.create[contract_path] = (
        f"# {domain}.{name}: generated by `mesh new product` from {', '.join(i.contract.id for i in parsed)}; edit it like any contract.\n"
        + yaml.safe_dump(contract, sort_keys=False, allow_unicode=True, width=120)
    )
    changes.replace[definitions_path] = _insert_product(definitions, _transform(name, parsed, columns, purpose), definitions_path)
    samples = {i.param: {c: [sample_value(p)] for c, p in zip(i.columns, i.properties)} for i in parsed}
    changes.create[test_path] = PRODUCT_TEST.format(domain=domain, name=name, samples=samples_literal(samples))
    for i in parsed:
        if access_level(i.contract) == "public":
            changes.notes.append(f"{i.contract.id} is public: readable without a grant (sensitive columns masked)")
            continue
        held = find_grant(i.producer, i.product, domain, domains)
        if held is not None and not held.pending:
            changes.notes.append(f"{domain!r} already holds a grant on {i.contract.id}")
            continue
        if held is not None:
            changes.notes.append(f"a grant request of {domain!r} on {i.contract.id} is already pending")
            continue
        grants_path = domains / i.producer / GRANTS_FILE
        current = changes.replace.get(grants_path) or (read_text(grants_path) if grants_path.exists() else "")
        approvers = domain_owners(i.producer, domains)
        body = _grant_request(current, grants_path, i.product, domain, purpose, approvers, expires)
        if grants_path.exists():
            changes.replace[grants_path] = body
        else:
            changes.create[grants_path] = body
        changes.notes.append(
            f"pending: {display_path(grants_path)} asks {i.producer!r} to grant {domain!r} {i.contract.id}; "
            f"approvers: {', '.join(approvers) or 'the owners of ' + i.producer} (`mesh grants approve {i.producer} {domain}`)"
        )
    return changes
