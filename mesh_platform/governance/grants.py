"""Grants: who may read a domain's products, kept as code in the producing domain.

``domains/<producer>/grants.yaml``::

    grants:
      - product: policyholders          # a product of this domain, or "*" for all of them
        consumer: customer_care         # the consuming domain
        purpose: Redact customer names from transcripts; derive age bands.
        expires: 2027-06-30             # optional for internal products, required for restricted ones
        unmasked: [pii]                 # classifications delivered in clear (the consumer must hold
                                        # the clearance in its domain.yaml); everything else sensitive
                                        # is pseudonymized or removed
        status: approved                # default; `pending` for a request (``mesh new product`` writes
                                        # one) that gives no access until the producer approves it
      - product: conversations
        consumer: analytics
        purpose: Contact topics by age band.
        expires: 2027-12-31
        port: aggregate                 # only differentially private aggregates
        privacy:                        # the consumer's total privacy budget on this product
          epsilon: 10.0
          unit: policyholder_id         # whose privacy is protected: rows per unit are capped
          max_contributions: 5

A grant is reviewed like code (it lives in the producer's package) and is the only way a domain
other than the producer reads an internal or restricted product.

The file is read through :mod:`mesh_platform.foundations.safe_yaml` and checked entry by entry: a malformed
entry is dropped (its consumer loses that access) and reported on this file with its field; a file
that cannot be read grants nothing. See :class:`GrantsFile` and :func:`grant_problems`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh_platform.foundations import safe_yaml
from mesh_platform.foundations.problems import ContractError, Problem, display_path
from mesh_platform.contracts.registry import VERSIONED, contract_files, default_domains_root

GRANTS_FILE = "grants.yaml"


class PrivacyBudget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0)
    unit: str = Field(min_length=1)
    max_contributions: int = Field(default=5, ge=1)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product: str
    consumer: str
    purpose: str = Field(min_length=3)
    expires: date | None = None
    unmasked: list[str] = Field(default_factory=list)
    port: Literal["data", "aggregate"] = "data"
    privacy: PrivacyBudget | None = None
    status: Literal["approved", "pending"] = "approved"

    @property
    def pending(self) -> bool:
        """A request the producer has not approved yet: it gives no access (see ``governance.access``)."""
        return self.status == "pending"

    @field_validator("expires", mode="before")
    @classmethod
    def _iso_date(cls, value):
        if value is None or isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"expires must be an ISO date (YYYY-MM-DD), got {value!r}") from None

    def expired(self, today: date | None = None) -> bool:
        return self.expires is not None and (today or date.today()) > self.expires

    def covers(self, product: str, consumer: str) -> bool:
        return self.consumer == consumer and self.product in (product, "*")


@dataclass(frozen=True)
class GrantsFile:
    """One producer's ``grants.yaml`` as read: its valid grants, and what is wrong with the rest.

    Entries are checked one by one. A malformed entry is dropped (fail closed: its consumer loses
    that access) and its problems kept, naming the file and field (``grants[2].expires``); the
    valid entries keep working. A file that cannot be read at all (not UTF-8, a directory, an
    alias bomb, not a mapping, ``grants`` not a list) grants nothing, to every consumer.
    """

    path: str  # as shown in messages
    entries: tuple[tuple[int, Grant], ...] = ()  # (position in the file, grant) of every valid entry
    problems: tuple[Problem, ...] = ()
    refused: tuple[tuple[int, str | None], ...] = ()  # (position, consumer as written) of every dropped entry
    readable: bool = True

    @property
    def grants(self) -> list[Grant]:
        return [grant for _, grant in self.entries]

    def refusals_for(self, consumer: str) -> list[Problem]:
        """Why grants this consumer may have been meant to hold are not in effect."""
        if not self.readable:
            return list(self.problems)
        positions = {f"grants[{i}]" for i, who in self.refused if who in (consumer, None)}
        return [p for p in self.problems if p.field.split(".")[0] in positions]


def _field(prefix: str, loc: tuple) -> str:
    parts = [prefix]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def parse_grants(raw, shown: str) -> GrantsFile:
    """Check a grants file's data entry by entry (see :class:`GrantsFile`)."""
    if raw is None:
        return GrantsFile(shown)
    if not isinstance(raw, dict):
        return GrantsFile(shown, problems=(Problem(shown, "", "a grants file must be a YAML mapping holding a `grants` list"),), readable=False)
    problems = [Problem(shown, str(key), "unknown field (a grants file holds only `grants`)") for key in raw if key != "grants"]
    items = raw.get("grants")
    if items is None:
        return GrantsFile(shown, problems=tuple(problems))
    if not isinstance(items, list):
        problems.append(Problem(shown, "grants", f"must be a list of grants, got {type(items).__name__}"))
        return GrantsFile(shown, problems=tuple(problems), readable=False)
    entries, refused = [], []
    for i, item in enumerate(items):
        consumer = item.get("consumer") if isinstance(item, dict) and isinstance(item.get("consumer"), str) else None
        try:
            grant = Grant.model_validate(item)
        except ValidationError as exc:
            problems.extend(Problem(shown, _field(f"grants[{i}]", e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors())
            refused.append((i, consumer))
            continue
        if grant.port == "aggregate" and grant.privacy is None:
            problems.append(Problem(shown, f"grants[{i}].privacy", "an aggregate grant needs a privacy budget (epsilon)"))
            refused.append((i, consumer))
            continue
        entries.append((i, grant))
    return GrantsFile(shown, tuple(entries), tuple(problems), tuple(refused))


def read_grants(domain_dir: Path) -> GrantsFile | None:
    """One producing domain's grants file, read once per version of the file (``None`` when it has none)."""
    path = os.path.join(domain_dir, GRANTS_FILE)  # one stat, no path resolution: read on every port
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        shown = display_path(path)
        return GrantsFile(shown, problems=(Problem(shown, "", f"grants file cannot be read: {exc.strerror or exc}"),), readable=False)
    return _read(path, info.st_mtime_ns, info.st_size)


@lru_cache(maxsize=64)
def _read(path: str, _mtime: int, _size: int) -> GrantsFile:
    shown = display_path(path)
    try:
        raw = safe_yaml.load_file(path, shown, "grants file")
    except ContractError as exc:
        return GrantsFile(shown, problems=tuple(exc.problems), readable=False)
    return parse_grants(raw, shown)


def load_grants(domain_dir: Path) -> list[Grant]:
    """The valid grants of one producing domain (empty when it has no grants.yaml, or it cannot be read)."""
    grants_file = read_grants(domain_dir)
    return grants_file.grants if grants_file is not None else []


def grants_of(producer: str, root: Path | None = None) -> list[Grant]:
    return load_grants((root or default_domains_root()) / producer)


def find_grant(producer: str, product: str, consumer: str, root: Path | None = None) -> Grant | None:
    """The grant that lets ``consumer`` read ``producer``'s ``product`` (an exact product match wins over ``*``).

    An approved grant wins over a pending one; a pending grant is returned only when nothing else
    matches, so that the access decision can refuse it saying it is pending (it gives no access).
    """
    matches = [g for g in grants_of(producer, root) if g.covers(product, consumer)]
    matches.sort(key=lambda g: (g.pending, g.product == "*"))
    return matches[0] if matches else None


@dataclass(frozen=True)
class PendingGrant:
    """A grant request in a producer's grants file, waiting for the producer's approval."""

    producer: str
    path: str  # the grants file, as shown in messages
    index: int  # position in the file
    grant: Grant


def pending_grants(domains: list[str], root: Path | None = None) -> list[PendingGrant]:
    """Every pending grant in the grants files of ``domains`` (the producers), in file order."""
    root = root or default_domains_root()
    found = []
    for producer in domains:
        grants_file = read_grants(root / producer)
        for i, grant in grants_file.entries if grants_file else ():
            if grant.pending:
                found.append(PendingGrant(producer, grants_file.path, i, grant))
    return found


_ENTRY = re.compile(r"^(?P<indent>\s*)- ")
_STATUS = re.compile(r"^(?P<lead>\s*(?:- )?)status:\s*pending\s*(?P<comment>#.*)?$")


def approve_grants(producer: str, consumer: str, product: str | None = None, root: Path | None = None) -> list[int]:
    """Approve ``consumer``'s pending grants in ``producer``'s grants file (only on ``product`` if given).

    The file is edited line by line, so its comments and layout are kept; it is written atomically.
    Returns the positions of the entries approved (empty: nothing was pending, nothing written).
    """
    root = root or default_domains_root()
    grants_file = read_grants(root / producer)
    if grants_file is None or not grants_file.readable:
        raise ContractError([Problem(grants_path(producer, root), "", "no readable grants file")])
    wanted = {i for i, g in grants_file.entries if g.pending and g.consumer == consumer and (product is None or g.product == product)}
    if not wanted:
        return []
    path = Path(root) / producer / GRANTS_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    index, indent, out = -1, None, []
    for line in lines:
        entry = _ENTRY.match(line)
        if entry and (indent is None or len(entry.group("indent")) == indent):
            indent = len(entry.group("indent"))
            index += 1
        status = _STATUS.match(line.rstrip("\n"))
        if status and index in wanted:
            line = f"{status.group('lead')}status: approved" + (f"  {status.group('comment')}" if status.group("comment") else "") + "\n"
        out.append(line)
    tmp = path.with_name(f".{GRANTS_FILE}.tmp")
    tmp.write_text("".join(out), encoding="utf-8")
    os.replace(tmp, path)
    approved = read_grants(root / producer)
    still = {i for i, g in approved.entries if i in wanted and g.pending} if approved else wanted
    if still:  # the layout was not one this edit understands: say so rather than claim success
        raise ContractError([Problem(display_path(path), f"grants[{min(still)}].status", "could not be set to approved; edit it by hand")])
    return sorted(wanted)


def grants_path(producer: str, root: Path | None = None) -> str:
    return display_path((root or default_domains_root()) / producer / GRANTS_FILE)


def grant_problems(domains: list[str], root: Path | None = None) -> dict[str, list[Problem]]:
    """What is wrong with each producing domain's grants: malformed entries, and dangling grants.

    A grant is dangling when its consumer is not one of ``domains`` (the mesh's domains), or its
    product is neither ``"*"`` nor a product of the producer (a contract ``contracts/<product>.yaml``
    of its domain). Keyed by producer; producers without a grants file are left out.
    """
    root = root or default_domains_root()
    known = set(domains)
    found: dict[str, list[Problem]] = {}
    for producer in domains:
        grants_file = read_grants(root / producer)
        if grants_file is None:
            continue
        problems = list(grants_file.problems)
        products = {p.stem for p in contract_files(root / producer) if not VERSIONED.match(p.stem)}
        for i, grant in grants_file.entries:
            if grant.consumer not in known:
                problems.append(Problem(grants_file.path, f"grants[{i}].consumer", f"{grant.consumer!r} is not a domain of the mesh (domains: {', '.join(sorted(known))})"))
            if grant.product != "*" and grant.product not in products:
                problems.append(Problem(
                    grants_file.path, f"grants[{i}].product",
                    f"{producer!r} has no product {grant.product!r} (products: {', '.join(sorted(products)) or 'none'}; or \"*\" for all of them)",
                ))
        found[producer] = problems
    return found
