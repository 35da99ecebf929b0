"""Access control on the read path: may this consumer read this product, and which variant.

Access levels (contract ``customProperties: accessLevel``, default ``internal``):

| level        | who may read                                                              |
| ------------ | ------------------------------------------------------------------------- |
| `public`     | every domain; sensitive columns masked unless a grant unmasks them        |
| `internal`   | domains holding a grant (consumer, purpose; an expiry is optional)        |
| `restricted` | domains holding a grant with a purpose *and* an expiry                    |

Every read of the lake goes through :func:`authorize_asset`: the producing domain always reads its
own assets (products in full, private intermediates); another domain reads only output ports, as
decided below, and never a private intermediate. A consumer reads the **full** port
only for sensitive columns whose classification its grant unmasks *and* its domain descriptor
holds as a clearance; otherwise it reads the **masked** port. An ``aggregate`` grant allows only
differentially private aggregates (:mod:`mesh_platform.governance.privacy`), never rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

from mesh_platform.contracts.loader import load_yaml
from mesh_platform.contracts.model import Contract
from mesh_platform.contracts.registry import default_domains_root
from mesh_platform.governance.grants import Grant, find_grant, grants_path
from mesh_platform.governance.masking import sensitive_columns, treatment

LEVELS = ("public", "internal", "restricted")


class AccessDenied(PermissionError):
    def __init__(self, consumer: str, product: str, reason: str):
        self.consumer, self.product, self.reason = consumer, product, reason
        super().__init__(f"domain {consumer!r} may not read {product!r}: {reason}")


class AccessPending(AccessDenied):
    """The consumer's grant is a request the producer has not approved yet: no access until it does."""

    def __init__(self, consumer: str, product: str, reason: str, approvers: list[str]):
        self.approvers = approvers
        super().__init__(consumer, product, reason)


@dataclass(frozen=True)
class AccessDecision:
    consumer: str
    contract: Contract
    variant: str  # "full" | "masked" | "aggregate"
    grant: Grant | None
    masked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def product(self) -> str:
        return self.contract.id


def authorize_asset(
    consumer: str,
    producer: str,
    name: str,
    contract: Contract | None,
    columns: list[str] | None = None,
    *,
    aggregate: bool = False,
    today: date | None = None,
    root: Path | None = None,
) -> AccessDecision | None:
    """Decide any read of the lake: ``producer``'s asset ``name``, an output port when ``contract`` is given.

    Returns None for a domain reading its own private intermediate; raises :class:`AccessDenied`
    for another domain's private area (never readable, whatever the asset's metadata says).
    """
    if contract is None:
        if consumer == producer:
            return None
        raise AccessDenied(
            consumer, f"{producer}/{name}",
            f"it is a private asset of domain {producer!r}, not an output port; only {producer!r} reads it "
            f"(ask {producer!r} to publish a product with a contract and a grant)",
        )
    if contract.domain != producer:
        raise AccessDenied(consumer, f"{producer}/{name}", f"the read names contract {contract.id!r}, which domain {producer!r} does not publish")
    return authorize(consumer, contract, columns, aggregate=aggregate, today=today, root=root)


def access_level(contract: Contract) -> str:
    level = str(contract.custom("accessLevel", "internal")).lower()
    if level not in LEVELS:
        raise ValueError(f"{contract.id}: customProperties[accessLevel] must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


def clearances(domain: str, root: Path | None = None) -> set[str]:
    """The clearances a domain's descriptor holds (read once per file version)."""
    path = (root or default_domains_root()) / domain / "domain.yaml"
    if not path.exists():
        return set()
    return set(_clearances(str(path), path.stat().st_mtime_ns))


@lru_cache(maxsize=256)
def _clearances(path: str, _mtime: int) -> tuple[str, ...]:
    raw = load_yaml(path) or {}
    return tuple(raw.get("clearances") or [])


def owners(domain: str, root: Path | None = None) -> list[str]:
    """The owners a domain's descriptor lists: who approves grants on its products."""
    path = (root or default_domains_root()) / domain / "domain.yaml"
    if not path.exists():
        return []
    raw = load_yaml(path) or {}
    found = raw.get("owners") if isinstance(raw, dict) else None
    return [str(o) for o in found] if isinstance(found, list) else []


def pending_reason(producer: str, product: str, consumer: str, where: str, root: Path | None = None) -> tuple[str, list[str]]:
    """Why a pending grant gives no access, and who must approve it (the producer's owners)."""
    who = owners(producer, root)
    return (
        f"the grant in {where} for consumer {consumer!r} on product {product!r} is pending: it gives no access until "
        f"domain {producer!r} approves it (owners: {', '.join(who) or 'none listed in its domain.yaml'}; "
        f"`mesh grants approve {producer} {consumer}`)"
    ), who


def authorize(
    consumer: str,
    contract: Contract,
    columns: list[str] | None = None,
    *,
    aggregate: bool = False,
    today: date | None = None,
    root: Path | None = None,
) -> AccessDecision:
    """Decide a read, or raise :class:`AccessDenied` naming consumer, product and the missing grant."""
    if consumer == contract.domain:
        return AccessDecision(consumer, contract, "full", None)
    level = access_level(contract)
    grant = find_grant(contract.domain, contract.name, consumer, root)
    where = grants_path(contract.domain, root)
    if grant is not None and grant.pending:
        if level != "public":
            reason, who = pending_reason(contract.domain, contract.name, consumer, where, root)
            raise AccessPending(consumer, contract.id, reason, who)
        grant = None  # a public product is read as if no grant were held: a request unmasks nothing
    if grant is None:
        if level != "public":
            raise AccessDenied(consumer, contract.id, f"it is {level} and {where} has no grant for consumer {consumer!r} on product {contract.name!r}")
    else:
        if grant.expired(today):
            raise AccessDenied(consumer, contract.id, f"the grant in {where} expired on {grant.expires}")
        if level == "restricted" and grant.expires is None:
            raise AccessDenied(consumer, contract.id, f"it is restricted and the grant in {where} has no expiry")
    if grant is not None and grant.port == "aggregate":
        if not aggregate:
            raise AccessDenied(consumer, contract.id, f"the grant in {where} allows differentially private aggregates only, not rows")
        return AccessDecision(consumer, contract, "aggregate", grant)
    if aggregate:
        raise AccessDenied(consumer, contract.id, f"no aggregate grant in {where}; read it as an input port")
    requested = set(columns) if columns is not None else set(contract.column_names)
    sensitive = {c: cls for c, cls in sensitive_columns(contract).items() if c in requested}
    cleared = set(grant.unmasked if grant else ()) & clearances(consumer, root)
    uncleared = {c: cls for c, cls in sensitive.items() if cls not in cleared}
    if not uncleared:
        return AccessDecision(consumer, contract, "full", grant)
    masked = [c for c in uncleared if treatment(contract.column(c)) == "pseudonymize"]
    removed = [c for c in uncleared if treatment(contract.column(c)) == "remove"]
    if columns is not None and removed:
        raise AccessDenied(
            consumer, contract.id,
            f"columns {', '.join(removed)} are removed for consumers not cleared for {', '.join(sorted({uncleared[c] for c in removed}))}",
        )
    return AccessDecision(consumer, contract, "masked", grant, masked, removed)
