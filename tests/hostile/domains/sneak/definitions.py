"""sneak: asset keys that climb out of its folder (plain Dagster around the platform's declarations).

- ``climber``: reads ``sneak/../../claims/_private/landed_claims`` as if it were its own private asset.
- ``dropper``: writes to ``sneak/../../claims/_private/dropped`` (claims' private area).
"""

import dagster as dg

from mesh_platform import Domain

domain = Domain.load(__file__)

CLIMB = dg.AssetKey(["sneak", "../../claims/_private/landed_claims"])


@dg.asset(key=["sneak", "climber"], ins={"raw": dg.AssetIn(key=CLIMB)})
def climber(raw):
    return raw


@dg.multi_asset(name="dropper", outs={"out": dg.AssetOut(key=dg.AssetKey(["sneak", "../../claims/_private/dropped"]))})
def dropper():
    import pandas as pd

    return pd.DataFrame({"x": [1]})


defs = dg.Definitions.merge(domain.definitions(), dg.Definitions(assets=[dg.AssetSpec(CLIMB), climber, dropper]))
