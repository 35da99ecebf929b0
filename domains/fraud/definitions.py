"""fraud: consumer-aligned ML domain (features, a scikit-learn model, scores).

scikit-learn is imported inside the transforms, never at definitions load.
"""

import numpy as np
import pandas as pd

from mesh_platform import Domain, InputPort, Lookup, NotYet, Window, on_run_days

domain = Domain.load(__file__)

FEATURES = [
    "claim_to_sum_insured",
    "days_since_policy_start",
    "report_delay_days",
    "prior_claims",
    "contacts",
    "complaints",
    "annual_premium",
]
HIGH_RISK = 0.5
MEDIUM_RISK = 0.2
# The retrain policy: weekly (Monday 03:00 UTC) when new features arrived since the last model, and
# as soon as there are enough labels for the first one. New days are scored with the current model;
# a new model rescores every day, in one run.
RETRAIN = "0 3 * * 1"
MIN_LABELS = 20


# Partitioned like claims (by the day a claim was reported), and incremental: a day's features are
# what was known when its claims were reported, that day's claims plus the policyholder's claims of
# the year before (prior_claims). The investigation outcome is not a feature: it arrives weeks later
# in claims' events, and the model joins it as the label when it trains. So a new day of events
# rebuilds no day of features (read whole, it rebuilt every day at each landing).
@domain.product(
    "claim_features",
    inputs={
        "claims": InputPort(
            "claims.claims",
            major=1,
            columns=["claim_id", "policy_id", "policyholder_id", "product_line", "incident_date", "reported_at", "amount_claimed"],
            partitions=Window(before=365),
            lookup="policyholder_id",  # the run's days, then their policyholders' claims of the year
        ),
        # read by key: the policies and contacts of the claims below, not every policy and contact
        "policies": InputPort("policies.policies", major=1, columns=["policy_id", "start_date", "sum_insured", "annual_premium"], lookup="policy_id"),
        "contacts": InputPort("customer_care.claim_contacts", major=1, columns=["claim_id", "contacts", "complaints"], lookup="claim_id"),
    },
)
def claim_features(context, claims: Lookup, policies: Lookup, contacts: Lookup) -> pd.DataFrame:
    # the run's days need only their policyholders' claims of the year (prior_claims), and those claims' policies and contacts
    claims = claims.rows(claims.on_run_days(context)["policyholder_id"])
    policies = policies.rows(claims["policy_id"])
    contacts = contacts.rows(claims["claim_id"])
    features = _features(claims, policies, contacts)
    return on_run_days(context, features, "reported_at").reset_index(drop=True)


def _features(claims: pd.DataFrame, policies: pd.DataFrame, contacts: pd.DataFrame) -> pd.DataFrame:
    df = claims.merge(policies, on="policy_id", how="left").merge(contacts, on="claim_id", how="left")
    df = df.sort_values(["policyholder_id", "reported_at", "claim_id"], kind="stable")
    incident = pd.to_datetime(df["incident_date"])
    return pd.DataFrame(
        {
            "claim_id": df["claim_id"],
            "reported_at": df["reported_at"],
            "product_line": df["product_line"],
            "amount_claimed": df["amount_claimed"],
            "claim_to_sum_insured": df["amount_claimed"] / df["sum_insured"],
            "days_since_policy_start": (incident - pd.to_datetime(df["start_date"])).dt.days,
            "report_delay_days": (df["reported_at"].dt.normalize() - incident).dt.days,
            "prior_claims": df.groupby("policyholder_id").cumcount(),
            "contacts": df["contacts"].fillna(0).astype("int64"),
            "complaints": df["complaints"].fillna(0).astype("int64"),
            "annual_premium": df["annual_premium"],
        }
    ).sort_values("claim_id", ignore_index=True)


def labels(events: pd.DataFrame) -> pd.DataFrame:
    """The outcome of every claim whose fraud investigation ended (its last outcome event decides)."""
    outcome = events[events["event_type"].isin(["fraud_confirmed", "fraud_cleared"])].drop_duplicates("claim_id", keep="last")
    return pd.DataFrame({"claim_id": outcome["claim_id"].to_numpy(), "confirmed_fraud": outcome["event_type"].eq("fraud_confirmed").to_numpy()})


@domain.asset(
    "fraud_model",
    kinds=["scikit-learn"],
    inputs={"features": "claim_features", "events": InputPort("claims.claim_events", major=1, columns=["claim_id", "event_type"])},
    refresh=RETRAIN,
)
def fraud_model(context, features: pd.DataFrame, events: pd.DataFrame) -> dict:
    """Gradient-boosted classifier trained on investigated claims (kept private to the domain): the
    features as known when each claim was reported, labelled with its investigation's outcome."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    labelled = features.merge(labels(events), on="claim_id", how="inner")
    y = labelled["confirmed_fraud"].astype(int).to_numpy()
    if len(labelled) < MIN_LABELS or y.min() == y.max():  # the previous model (if any) stays
        return NotYet(f"not enough labelled claims to train on ({len(labelled)} rows, classes {sorted(int(c) for c in set(y))}; {MIN_LABELS} of both needed)")
    X = labelled[FEATURES].to_numpy(dtype=float)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    # Shallow, regularized trees: few labels, and a model that memorizes them would look perfect in-sample.
    model = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.05, max_depth=3, min_samples_leaf=20, l2_regularization=1.0, random_state=0
    ).fit(X_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])) if len(set(y_test)) > 1 else float("nan")
    model.fit(X, y)  # final model on every label
    version = f"hgb-{context.run_id[:8]}"
    context.add_output_metadata({"test_auc": auc, "training_rows": len(labelled), "model_version": version})
    return {"model": model, "features": FEATURES, "version": version, "test_auc": auc}


@domain.product("fraud_scores", kinds=["scikit-learn"], inputs={"features": "claim_features", "model": "fraud_model"})
def fraud_scores(features: pd.DataFrame, model: dict) -> pd.DataFrame:
    X = features[model["features"]].to_numpy(dtype=float)
    # a day without claims scores nothing (scikit-learn refuses an empty batch): an empty partition
    score = model["model"].predict_proba(X)[:, 1] if len(X) else np.empty(0)
    band = pd.cut(score, bins=[-0.01, MEDIUM_RISK, HIGH_RISK, 1.01], labels=["low", "medium", "high"]).astype("str")
    return pd.DataFrame(
        {
            "claim_id": features["claim_id"],
            "reported_at": features["reported_at"],
            "product_line": features["product_line"],
            "fraud_score": score,
            "risk_band": band,
            "flagged": score >= HIGH_RISK,
            "model_version": model["version"],
            "scored_at": pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s"),
        }
    )


defs = domain.definitions(jobs=[domain.job()])
