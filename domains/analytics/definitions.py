"""analytics: aggregate domain with the claims organisation's KPIs.

The KPI marts are a dbt project (dbt/analytics): its sources are input ports onto the other
domains' products, staged through the governed read path, and its models are this domain's products
(their dbt contracts are generated from the ODCS contracts in contracts/). One product is Python:
contact topics, released by customer_care only as differentially private aggregates.
"""

from pathlib import Path

import pandas as pd

from mesh_platform import Aggregate, Domain, InputPort, count, mean

domain = Domain.load(__file__)
domain.dbt(Path(__file__).resolve().parents[2] / "dbt" / "analytics")


TOPICS_EPSILON = 0.5


@domain.product(
    "contact_topics",
    inputs={
        "topics": InputPort(
            "customer_care.conversations",
            major=1,
            purpose="Contact topics by age band",
            aggregate=Aggregate(group_by=["topic", "age_band"], measures=[count(), mean("satisfaction", 1, 5)], epsilon=TOPICS_EPSILON),
        )
    },
)
def contact_topics(topics: pd.DataFrame) -> pd.DataFrame:
    """customer_care grants analytics this product only as differentially private aggregates."""
    return pd.DataFrame(
        {
            "topic": topics["topic"],
            "age_band": topics["age_band"],
            "conversations": topics["dp_count"].astype("int64"),
            "avg_satisfaction": topics["dp_mean_satisfaction"],
            "epsilon": TOPICS_EPSILON,
        }
    )


defs = domain.definitions(jobs=[domain.job()])
