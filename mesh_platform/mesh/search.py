"""Mesh-wide search: domains, products and columns, found by any word of their definitions.

The platform keeps a full-text index (SQLite FTS5, in the standard library) at
``search.sqlite`` in the mesh home the ``mesh`` command passes (or ``MESH_SEARCH_INDEX``). It is
built from the definitions themselves, never from a domain's code: every domain's ``domain.yaml``
(name, kind, team, owners, description), every contract (id, name, purpose, usage, limitations,
tags, owners, classification, access level, status) and every column of every contract (name,
type, description, tags, classification). Importing no domain, it builds in well under a second.

The index is **refreshed when the definitions change**: each search compares a fingerprint of the
definition files (path, size and modification time of every ``domain.yaml``, ``grants.yaml`` and
contract) with the one the index was built from, and rebuilds it when they differ. A rebuild writes
a new file next to the old one and swaps it in with one rename, so a concurrent search never sees a
half-built index.

Results are ranked by BM25 with the name weighted above tags, owners and classification, and
those above free text. Every product hit (and every column hit, for its product) carries what the
Dagster instance knows: the last materialization, its run, and the product's freshness against
its contract's ``latency`` SLA.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mesh_platform.contracts.loader import ContractError, Problem, display_path
from mesh_platform.contracts.registry import ContractRegistry, contract_files, default_domains_root

SCHEMA_VERSION = "1"
KINDS = ("domain", "product", "column")
#: searchable fields, in the order of the FTS5 table, with their BM25 weights
FIELDS = {"name": 10.0, "title": 4.0, "tags": 3.0, "owners": 3.0, "classification": 3.0, "description": 1.0, "extra": 1.0}
#: at equal text relevance, a domain ranks above a product, a product above one of its columns
KIND_WEIGHT = {"domain": 1.3, "product": 1.15, "column": 1.0}


class SearchError(ValueError):
    """A query that cannot be searched (nothing to look for, an unknown kind)."""


def index_path(home: str | Path | None) -> Path:
    """``MESH_SEARCH_INDEX``, else ``search.sqlite`` in the mesh ``home`` (the command's settings)."""
    configured = os.environ.get("MESH_SEARCH_INDEX")
    if configured:
        return Path(configured).resolve()
    if home is None:
        raise SearchError("no search index: give its path, or the mesh home it is kept in")
    return Path(home) / "search.sqlite"


# -- what is indexed --------------------------------------------------------------------------


def definition_files(root: Path) -> list[Path]:
    """The files the index is built from: every domain's descriptor, grants and contracts."""
    files: list[Path] = []
    if not root.is_dir():
        return files
    for domain_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for name in ("domain.yaml", "grants.yaml"):
            if (domain_dir / name).is_file():
                files.append(domain_dir / name)
        files.extend(contract_files(domain_dir))
    return files


def fingerprint(root: Path) -> str:
    digest = hashlib.sha256(f"{SCHEMA_VERSION}\0{root.resolve()}".encode())
    for path in definition_files(root):
        try:
            info = path.stat()
        except OSError:
            continue
        digest.update(f"\0{path}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass
class Document:
    kind: str
    key: str
    domain: str
    name: str
    title: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    classification: str = ""
    extra: str = ""
    data: dict = field(default_factory=dict)  # shown with a hit, not searched


def _words(name: str) -> str:
    """``amount_claimed`` is also found as "amount claimed"."""
    return f"{name} {name.replace('_', ' ').replace('.', ' ').replace('/', ' ')}"


def documents(root: Path) -> tuple[list[Document], list[Problem]]:
    """Every domain, product and column under ``root``, and the files that could not be read."""
    from mesh_platform.products.descriptor import load_descriptor

    docs: list[Document] = []
    problems: list[Problem] = []
    domain_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))) if root.is_dir() else []
    for domain_dir in domain_dirs:
        if not (domain_dir / "domain.yaml").exists():
            continue
        try:
            d = load_descriptor(domain_dir / "domain.yaml")
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        docs.append(Document(
            kind="domain", key=d.name, domain=d.name, name=_words(d.name), title=d.team,
            description=d.description.strip(), owners=list(d.owners), extra=" ".join(filter(None, [d.kind, d.contact or ""])),
            data={"kind": d.kind, "team": d.team, "owners": list(d.owners), "description": d.description.strip(), "contact": d.contact},
        ))
    registry = ContractRegistry.discover(root)
    problems.extend(registry.problems)
    for c in registry:
        desc = c.description
        text = " ".join(filter(None, [desc.purpose, desc.usage, desc.limitations] if desc else []))
        try:
            latency = c.sla_hours("latency")
        except ValueError:
            latency = None
        access = c.custom("accessLevel")
        product = f"{c.domain}/{c.name}"
        docs.append(Document(
            kind="product", key=product, domain=c.domain, name=f"{_words(c.name)} {c.id}", title=c.table.business_name or c.table.description or "",
            description=text, tags=list(c.tags) + list(c.table.tags), owners=c.owners + [m.username for m in (c.team.members if c.team else []) if "@" not in m.username],
            classification=" ".join(c.classifications), extra=" ".join(filter(None, [c.status, str(access or ""), c.team.name if c.team and c.team.name else ""])),
            data={"contract_id": c.id, "version": c.version, "status": c.status, "access_level": access, "description": desc.purpose if desc else None,
                  "owners": c.owners, "tags": list(c.tags), "classifications": c.classifications, "latency_hours": latency,
                  "contract_file": display_path(c.source) if c.source else None},
        ))
        for col in c.columns:
            docs.append(Document(
                kind="column", key=f"{product}.{col.name}", domain=c.domain, name=_words(col.name), title=col.business_name or "",
                description=col.description or "", tags=list(col.tags), classification=col.classification or "",
                extra=" ".join(filter(None, [col.logical_type or "", "primary key" if col.primary_key else "", c.name])),
                data={"product": product, "type": col.logical_type, "required": col.required or col.primary_key, "primary_key": col.primary_key,
                      "classification": col.classification, "description": col.description, "latency_hours": latency},
            ))
    return docs, problems


# -- the index --------------------------------------------------------------------------------


def build_index(root: Path, path: Path) -> list[Problem]:
    """(Re)build the index at ``path`` from the definitions under ``root``; swapped in atomically."""
    docs, problems = documents(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".search-", suffix=".sqlite", dir=path.parent)
    os.close(fd)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        con = sqlite3.connect(tmp)
        with con:
            columns = ", ".join(FIELDS)
            con.execute(f"CREATE VIRTUAL TABLE docs USING fts5(kind UNINDEXED, key UNINDEXED, domain UNINDEXED, {columns}, tokenize='porter unicode61')")
            con.execute("CREATE TABLE payload (rowid INTEGER PRIMARY KEY, data TEXT NOT NULL)")
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for i, doc in enumerate(docs, start=1):
                con.execute(
                    f"INSERT INTO docs (rowid, kind, key, domain, {columns}) VALUES (?, ?, ?, ?, {', '.join('?' * len(FIELDS))})",
                    (i, doc.kind, doc.key, doc.domain, doc.name, doc.title, " ".join(doc.tags), " ".join(doc.owners), doc.classification, doc.description, doc.extra),
                )
                con.execute("INSERT INTO payload (rowid, data) VALUES (?, ?)", (i, json.dumps(doc.data)))
            meta = {"fingerprint": fingerprint(root), "root": str(root), "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "problems": json.dumps([p.__dict__ for p in problems]), "documents": str(len(docs))}
            con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        con.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return problems


def _meta(path: Path) -> dict[str, str]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return dict(con.execute("SELECT key, value FROM meta"))
        finally:
            con.close()
    except sqlite3.Error:
        return {}


@dataclass
class IndexState:
    path: Path
    rebuilt: bool
    documents: int
    problems: list[Problem]


def ensure_index(root: Path | None = None, path: Path | None = None, force: bool = False, home: str | Path | None = None) -> IndexState:
    """The index, rebuilt first when the definitions changed since it was built (or ``force``).
    ``path``: the index file; by default :func:`index_path` of the mesh ``home``."""
    root = (Path(root) if root else default_domains_root()).resolve()
    path = path or index_path(home)
    meta = {} if force or not path.exists() else _meta(path)
    rebuilt = meta.get("fingerprint") != fingerprint(root)
    if rebuilt:
        build_index(root, path)
        meta = _meta(path)
    problems = [Problem(**p) for p in json.loads(meta.get("problems", "[]"))]
    return IndexState(path, rebuilt, int(meta.get("documents", 0)), problems)


@dataclass
class Hit:
    kind: str
    key: str
    domain: str
    score: float
    snippet: str
    data: dict
    last_materialized: str | None = None
    last_run_id: str | None = None
    freshness: str | None = None  # fresh | stale | never materialized | no latency SLA

    def as_dict(self) -> dict:
        return asdict(self)


def _match_expression(text: str, any_word: bool) -> str:
    """Each space-separated term of ``text`` as an FTS5 phrase of its words, the last one a prefix.

    ``claims-data@acme-insurance.example`` is one term: its words must appear together, in order.
    Only the words reach FTS5, each quoted, so nothing in the text is read as query syntax.
    """
    terms = [words for chunk in text.split() if (words := re.findall(r"\w+", chunk))]
    if not terms:
        raise SearchError(f"nothing to search for in {text!r}: give at least one word (letters or digits)")
    phrases = ['"' + " ".join(words) + '"*' for words in terms]
    return (" OR " if any_word else " ").join(phrases)


def query(path: Path, text: str, limit: int = 20, kinds: tuple[str, ...] = ()) -> tuple[list[Hit], str]:
    """Ranked hits for ``text`` (every word, as a prefix; else any word) and which of the two matched."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SearchError(f"unknown kind(s) {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
    if limit < 1:
        raise SearchError(f"limit must be at least 1, got {limit}")
    weights = ", ".join(str(w) for w in FIELDS.values())
    boost = " ".join(f"WHEN '{k}' THEN {w}" for k, w in KIND_WEIGHT.items())
    where_kind = f" AND docs.kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
    sql = (
        f"SELECT docs.kind, docs.key, docs.domain, bm25(docs, 0, 0, 0, {weights}) * (CASE docs.kind {boost} ELSE 1 END) AS score, "
        f"snippet(docs, 8, '[', ']', '…', 16), payload.data "
        f"FROM docs JOIN payload ON payload.rowid = docs.rowid WHERE docs MATCH ?{where_kind} ORDER BY score, docs.key LIMIT ?"
    )
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for mode in ("all", "any"):
            rows = con.execute(sql, (_match_expression(text, mode == "any"), *kinds, limit)).fetchall()
            if rows:
                break
    finally:
        con.close()
    hits = [Hit(kind, key, domain, round(-score, 4), snippet, json.loads(data)) for kind, key, domain, score, snippet, data in rows]
    return hits, mode


def add_freshness(hits: list[Hit], instance, now: datetime | None = None) -> None:
    """Last materialization, run and freshness of every product hit (a column: its product's)."""
    import dagster as dg

    now = now or datetime.now(timezone.utc)
    seen: dict[str, tuple] = {}
    for hit in hits:
        product = hit.key if hit.kind == "product" else hit.data.get("product") if hit.kind == "column" else None
        if product is None:
            continue
        if product not in seen:
            event = instance.get_latest_materialization_event(dg.AssetKey(product.split("/")))
            seen[product] = (event.timestamp, event.run_id) if event is not None else (None, None)
        timestamp, run_id = seen[product]
        latency = hit.data.get("latency_hours")
        if timestamp is None:
            hit.freshness = "never materialized"
        else:
            when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
            hit.last_materialized = when.isoformat(timespec="seconds")
            hit.last_run_id = run_id
            if latency is None:
                hit.freshness = "no latency SLA"
            else:
                hit.freshness = "fresh" if (now - when).total_seconds() <= latency * 3600 else "stale"


def search(text: str, instance=None, limit: int = 20, kinds: tuple[str, ...] = (), root: Path | None = None, path: Path | None = None,
           home: str | Path | None = None) -> dict:
    """Search the mesh (refreshing the index first if the definitions changed); the index is ``path``,
    or the one kept in the mesh ``home``."""
    _match_expression(text, False)  # a query with no word is refused before anything is built
    state = ensure_index(root, path, home=home)
    hits, mode = query(state.path, text, limit, kinds)
    if instance is not None:
        add_freshness(hits, instance)
    return {
        "query": text,
        "matched": mode,
        "index": {"path": str(state.path), "rebuilt": state.rebuilt, "documents": state.documents},
        "problems": [p.__dict__ for p in state.problems],
        "hits": [h.as_dict() for h in hits],
    }
