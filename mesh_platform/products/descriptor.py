"""A domain's descriptor, ``domain.yaml``: name, kind, team, owners, contact, description, clearances."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh_platform.contracts.loader import load_yaml
from mesh_platform.contracts.model import IDENTIFIER
from mesh_platform.foundations.problems import ContractError, Problem, display_path

DESCRIPTOR = "domain.yaml"


class DomainDescriptor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["source-aligned", "consumer-aligned", "aggregate"]
    description: str
    team: str
    owners: list[str] = Field(min_length=1)
    contact: str | None = None
    clearances: list[str] = Field(default_factory=list)
    quotas: dict[str, Any] | None = None  # checked by mesh_platform.governance.quotas against the mesh's ceilings
    deployment: dict[str, Any] | None = None  # production deployment settings, read by `mesh helm` (mesh_platform/deployment/helm.py)


def load_descriptor(path: Path) -> DomainDescriptor:
    shown = display_path(path)
    if not path.exists():
        raise ContractError([Problem(shown, "", "domain descriptor not found")])
    raw = load_yaml(path)
    try:
        descriptor = DomainDescriptor.model_validate(raw)
    except ValidationError as exc:
        raise ContractError([Problem(shown, ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]) from None
    if not IDENTIFIER.match(descriptor.name):
        raise ContractError([Problem(shown, "name", f"domain name {descriptor.name!r} must be snake_case")])
    if descriptor.name != path.parent.name:
        raise ContractError([Problem(shown, "name", f"domain {descriptor.name!r} must live in a folder of the same name, not {path.parent.name!r}")])
    return descriptor


__all__ = ["DESCRIPTOR", "DomainDescriptor", "load_descriptor"]
