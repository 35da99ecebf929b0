"""Data contracts (ODCS v3.1): typed model, loading with precise errors, registry, enforcement."""

from mesh_platform.contracts.enforcement import ContractViolation, Violation, arrow_schema, conform
from mesh_platform.contracts.loader import ContractError, Problem, load_contract, parse_contract
from mesh_platform.contracts.model import Contract, SchemaProperty
from mesh_platform.contracts.registry import ContractRegistry, mesh_registry

__all__ = [
    "Contract",
    "ContractError",
    "ContractRegistry",
    "ContractViolation",
    "Problem",
    "SchemaProperty",
    "Violation",
    "arrow_schema",
    "conform",
    "load_contract",
    "mesh_registry",
    "parse_contract",
]
