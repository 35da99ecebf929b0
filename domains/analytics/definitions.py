"""analytics: aggregate domain with the claims organisation's KPIs."""

import pandas as pd

from mesh_platform import Domain, InputPort
from mesh_platform.governance.privacy import Aggregate, count, mean

domain = Domain.load(__file__)


@domain.product(
    "claims_weekly",
    inputs={"claims": InputPort("claims.claims", major=1, columns=["claim_id", "reported_at", "status", "cycle_time_days", "amount_paid"])},
)
def claims_weekly(claims: pd.DataFrame) -> pd.DataFrame:
    week = claims["reported_at"].dt.to_period("W-SUN").dt.start_time.dt.date
    settled = claims["status"] != "open"
    grouped = claims.assign(week_start=week, settled=settled).groupby("week_start", sort=True)
    return pd.DataFrame(
        {
            "claims_reported": grouped.size(),
            "claims_settled": grouped["settled"].sum().astype("int64"),
            "median_cycle_time_days": grouped["cycle_time_days"].median(),
            "amount_paid": grouped["amount_paid"].sum(),
        }
    ).reset_index()


@domain.product(
    "loss_ratio",
    inputs={
        "policies": InputPort("policies.policies", major=1, columns=["policy_id", "product_line", "annual_premium"]),
        "claims": InputPort("claims.claims", major=1, columns=["product_line", "amount_paid"]),
    },
)
def loss_ratio(policies: pd.DataFrame, claims: pd.DataFrame) -> pd.DataFrame:
    written = policies.groupby("product_line").agg(policies=("policy_id", "count"), premium_written=("annual_premium", "sum"))
    paid = claims.groupby("product_line").agg(claims_paid=("amount_paid", "sum"))
    df = written.join(paid, how="left").fillna({"claims_paid": 0.0}).reset_index()
    df["loss_ratio"] = df["claims_paid"] / df["premium_written"]
    return df


@domain.product(
    "fraud_hit_rate",
    inputs={
        "scores": InputPort("fraud.fraud_scores", major=1, columns=["claim_id", "flagged"]),
        "claims": InputPort("claims.claims", major=1, columns=["claim_id", "product_line"]),
        "events": InputPort("claims.claim_events", major=1, columns=["claim_id", "event_type"]),
    },
)
def fraud_hit_rate(scores: pd.DataFrame, claims: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    outcomes = events[events["event_type"].isin(["fraud_confirmed", "fraud_cleared"])].drop_duplicates("claim_id", keep="last")
    df = scores.merge(claims, on="claim_id").merge(outcomes, on="claim_id", how="left")
    df["investigated"] = df["flagged"] & df["event_type"].notna()
    df["confirmed"] = df["flagged"] & (df["event_type"] == "fraud_confirmed")
    out = df.groupby("product_line").agg(
        claims=("claim_id", "count"),
        flagged=("flagged", "sum"),
        flagged_investigated=("investigated", "sum"),
        flagged_confirmed=("confirmed", "sum"),
    )
    out = out.astype("int64")
    out["hit_rate"] = (out["flagged_confirmed"] / out["flagged_investigated"]).where(out["flagged_investigated"] > 0)
    return out.reset_index()


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
