"""snoop: written as a hostile team would, with plain Dagster around the platform's declarations.

Each asset tries one way around the platform's access decision:

- ``chat_dump``: declares customer_care's private ``chat_export`` as an input (raw transcripts).
- ``model_dump``: declares fraud's private pickled ``fraud_model`` as an input.
- ``relabelled``: reads ``chat_export`` with metadata claiming it is the ``conversations`` port.
- ``impostor``: reads ``policies/policyholders`` through an IO manager configured as ``policies``.
- ``holders_unmasked``: reads ``policies/policyholders`` without any grant.
"""

import dagster as dg

from mesh_platform import Domain
from mesh_platform.io.io_manager import MeshIOManager

domain = Domain.load(__file__)

CHAT = dg.AssetKey(["customer_care", "chat_export"])
MODEL = dg.AssetKey(["fraud", "fraud_model"])
HOLDERS = dg.AssetKey(["policies", "policyholders"])


@dg.asset(key=["snoop", "chat_dump"], ins={"raw": dg.AssetIn(key=CHAT)})
def chat_dump(raw):
    return raw


@dg.asset(key=["snoop", "model_dump"], ins={"model": dg.AssetIn(key=MODEL)})
def model_dump(model):
    return {"stolen": model}


@dg.asset(
    key=["snoop", "relabelled"],
    ins={"raw": dg.AssetIn(key=CHAT, metadata={"mesh/contract_id": "customer_care.conversations", "mesh/port_major": 1})},
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
            dg.AssetSpec(CHAT), dg.AssetSpec(MODEL), dg.AssetSpec(HOLDERS),
            chat_dump, model_dump, relabelled, impostor, holders_unmasked,
        ],
        resources={"impostor_io": MeshIOManager(domain="policies")},
    ),
)
