"""The fraud domain's own policies, on top of the mesh's global ones."""

from mesh_platform import policy


@policy("model_outputs_state_limitations", "Products derived from a model say what the model cannot tell.")
def model_outputs_state_limitations(product):
    contract = product.contract
    if "ml" in contract.tags and not (contract.description and contract.description.limitations):
        yield product.contract_file, "description.limitations", "a model-derived product must state its limitations"
