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
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh_platform.contracts.loader import ContractError, Problem, display_path, load_yaml
from mesh_platform.contracts.registry import default_domains_root

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


class GrantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grants: list[Grant] = Field(default_factory=list)


def load_grants(domain_dir: Path) -> list[Grant]:
    """The grants of one producing domain (empty when it has no grants.yaml)."""
    path = os.path.join(domain_dir, GRANTS_FILE)  # one stat, no path resolution: read on every port
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return []
    return _load(path, mtime)


@lru_cache(maxsize=64)
def _load(path: str, _mtime: int) -> list[Grant]:
    shown = display_path(path)
    raw = load_yaml(path)
    try:
        parsed = GrantsFile.model_validate(raw or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            parts = []
            for item in loc:
                if isinstance(item, int) and parts:
                    parts[-1] += f"[{item}]"
                else:
                    parts.append(str(item))
            problems.append(Problem(shown, ".".join(parts), err["msg"].removeprefix("Value error, ")))
        raise ContractError(problems) from None
    for i, grant in enumerate(parsed.grants):
        if grant.port == "aggregate" and grant.privacy is None:
            raise ContractError([Problem(shown, f"grants[{i}].privacy", "an aggregate grant needs a privacy budget (epsilon)")])
    return parsed.grants


def grants_of(producer: str, root: Path | None = None) -> list[Grant]:
    return load_grants((root or default_domains_root()) / producer)


def find_grant(producer: str, product: str, consumer: str, root: Path | None = None) -> Grant | None:
    """The grant that lets ``consumer`` read ``producer``'s ``product`` (an exact product match wins over ``*``)."""
    matches = [g for g in grants_of(producer, root) if g.covers(product, consumer)]
    matches.sort(key=lambda g: g.product == "*")
    return matches[0] if matches else None


def grants_path(producer: str, root: Path | None = None) -> str:
    return display_path((root or default_domains_root()) / producer / GRANTS_FILE)
