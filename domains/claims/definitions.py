"""claims: source-aligned domain over the files the claims system drops in a landing zone."""

import pandas as pd

from mesh_platform import Domain, InputPort, LandingZone, Lookup, Rejects, Screened, landed_for_run, landing_zone_sensor, record_landed

domain = Domain.load(__file__)

# The layout of the claims system's CSV export; a file with other columns is quarantined whole.
CLAIM_COLUMNS = [
    "claim_ref", "policy_no", "claim_type", "incident_date", "reported_at",
    "amount_claimed", "status", "settled_at", "amount_paid",
]


@domain.asset("landed_claims", kinds=["csv"], resources=["landing"])
def landed_claims(context) -> Screened:
    """The claim rows of the run's days (reporting day) from every landed batch that has some; later batches update earlier ones."""
    landed = landed_for_run(context, context.resources.landing, "claims_*.csv", day_column="reported_at")
    if not landed.files and not context.resources.landing.landed("claims_*.csv"):
        raise FileNotFoundError(f"no claims files in the landing zone {context.resources.landing.path}")
    rejects = Rejects()
    frames = [
        rejects.layout(rejects.read_csv(f.open, f.name, dtype={"claim_ref": str, "policy_no": str}), CLAIM_COLUMNS, file=f.name).assign(batch=f.stem)
        for f in landed.files
    ]
    record_landed(context, landed.files)  # which batches it read: the output's metadata
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*CLAIM_COLUMNS, "batch"])
    # a row whose reporting day is unreadable or on no partition day, or with a date or amount that
    # cannot be read, is quarantined with its reason; the batch's other rows go on
    rows = landed.rows_in_run(rows, rejects, file_column="batch")
    rows = rejects.unparseable(rows, {"incident_date": "date", "settled_at": "datetime", "amount_claimed": "number", "amount_paid": "number"}, convert=False)
    return rejects.screened(rows.assign(amount_claimed=pd.to_numeric(rows["amount_claimed"]), amount_paid=pd.to_numeric(rows["amount_paid"])))


@domain.asset("landed_claim_events", kinds=["json"], resources=["landing"])
def landed_claim_events(context) -> Screened:
    """The claim events of the run's days from every landed batch that has some."""
    landed = landed_for_run(context, context.resources.landing, "claim_events_*.jsonl", day_column="at")
    record_landed(context, landed.files)
    rejects = Rejects()
    frames = [rejects.read_jsonl(f.open, f.name, dtype={"claim_ref": str}).assign(batch=f.stem) for f in landed.files]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"claim_ref": [], "event": [], "at": pd.Series([], dtype="datetime64[us]"), "event_no": [], "batch": []})
    return rejects.screened(landed.rows_in_run(rows, rejects, file_column="batch").drop(columns="batch"))


@domain.product(
    "claims",
    inputs={
        "landed": "landed_claims",
        # read by key: the policies these claims name, not the whole book
        "policies": InputPort("policies.policies", major=1, columns=["policy_id", "policyholder_id", "product_line"], lookup="policy_id"),
    },
)
def claims(landed: pd.DataFrame, policies: Lookup) -> Screened:
    rejects = Rejects()
    policies = policies.rows(landed["policy_no"])
    landed = rejects.conflicting(landed, key="claim_ref", within="batch")
    landed = rejects.unresolved(landed, "policy_no", policies["policy_id"], reason="unknown_policy", references="policies.policies")
    latest = landed.sort_values("batch", kind="stable").drop_duplicates("claim_ref", keep="last")
    merged = latest.merge(policies, left_on="policy_no", right_on="policy_id", how="inner", validate="many_to_one")
    reported = pd.to_datetime(merged["reported_at"])
    settled = pd.to_datetime(merged["settled_at"])
    return rejects.screened(pd.DataFrame(
        {
            "claim_id": merged["claim_ref"],
            "policy_id": merged["policy_id"],
            "policyholder_id": merged["policyholder_id"],
            "product_line": merged["product_line"],
            "claim_type": merged["claim_type"],
            "incident_date": pd.to_datetime(merged["incident_date"]).dt.date,
            "reported_at": reported,
            "amount_claimed": merged["amount_claimed"].astype(float),
            "status": merged["status"],
            "settled_at": settled,
            "amount_paid": merged["amount_paid"].astype(float),
            "cycle_time_days": (settled - reported).dt.total_seconds() / 86400.0,
        }
    ).sort_values("claim_id", ignore_index=True))


@domain.product("claim_events", inputs={"landed": "landed_claim_events"})
def claim_events(landed: pd.DataFrame) -> pd.DataFrame:
    events = landed.drop_duplicates("event_no", keep="last")
    return pd.DataFrame(
        {
            "event_id": events["event_no"].astype("int64"),
            "claim_id": events["claim_ref"],
            "event_type": events["event"],
            "occurred_at": pd.to_datetime(events["at"]),
        }
    ).sort_values("event_id", ignore_index=True)


claims_job = domain.job()
landing = LandingZone.claims(domain.settings)

defs = domain.definitions(
    resources={"landing": landing},
    jobs=[claims_job],
    sensors=[
        landing_zone_sensor(
            name="claims_landing_sensor",
            job=claims_job,
            landing=landing,
            patterns=["claims_*.csv", "claim_events_*.jsonl"],
            waits_for=[["policies", "policies"]],
            readers=[["claims", "landed_claims"], ["claims", "landed_claim_events"]],
            days={"claims_*.csv": "reported_at", "claim_events_*.jsonl": "at"},
            complete_batches=True,  # claims_batch_NNNN.csv with claim_events_batch_NNNN.jsonl
        )
    ],
)
