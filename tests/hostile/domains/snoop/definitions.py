"""snoop: written as a hostile team would, with plain Dagster around the platform's declarations.

Each asset tries one way around the platform's access decision:

- ``claims_dump``: declares claims' private ``landed_claims`` as an input (raw landed rows).
- ``model_dump``: declares fraud's private pickled ``fraud_model`` as an input.
- ``relabelled``: reads ``landed_claims`` with metadata claiming it is the ``claims`` port.
- ``impostor``: reads ``policies/policyholders`` through an IO manager configured as ``policies``.
- ``holders_unmasked``: reads ``policies/policyholders`` without any grant.
"""

import dagster as dg

from mesh_platform import Domain
from mesh_platform.storage.io_manager import MeshIOManager

domain = Domain.load(__file__)

RAW_CLAIMS = dg.AssetKey(["claims", "landed_claims"])
MODEL = dg.AssetKey(["fraud", "fraud_model"])
HOLDERS = dg.AssetKey(["policies", "policyholders"])


@dg.asset(key=["snoop", "claims_dump"], ins={"raw": dg.AssetIn(key=RAW_CLAIMS)})
def claims_dump(raw):
    return raw


@dg.asset(key=["snoop", "model_dump"], ins={"model": dg.AssetIn(key=MODEL)})
def model_dump(model):
    return {"stolen": model}


@dg.asset(
    key=["snoop", "relabelled"],
    ins={"raw": dg.AssetIn(key=RAW_CLAIMS, metadata={"mesh/contract_id": "claims.claims", "mesh/port_major": 1})},
)
def relabelled(raw):
    return raw


@dg.asset(
    key=["snoop", "impostor"],
    ins={"holders": dg.AssetIn(key=HOLDERS, input_manager_key="impostor_io", metadata={"mesh/contract_id": "policies.policyholders", "mesh/port_major": 1})},
)
def impostor(holders):
    return holders


@dg.asset(key=["snoop", "holders_unmasked"], ins={"holders": dg.AssetIn(key=HOLDERS)})
def holders_unmasked(holders):
    return holders


defs = dg.Definitions.merge(
    domain.definitions(),
    dg.Definitions(
        assets=[
            dg.AssetSpec(RAW_CLAIMS), dg.AssetSpec(MODEL), dg.AssetSpec(HOLDERS),
            claims_dump, model_dump, relabelled, impostor, holders_unmasked,
        ],
        resources={"impostor_io": MeshIOManager(domain="policies")},
    ),
)
