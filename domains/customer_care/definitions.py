"""customer_care: source-aligned domain over the support tool's conversation export."""

import pandas as pd

from mesh_platform import Domain, InputPort, LandingZone, Rejects, Screened, redact_contact_details

domain = Domain.load(__file__)

PHONE_REGION = "GB"  # customers write UK numbers without +44
TRANSCRIPT_WITHHELD = "[withheld: conversation about an unknown policy; the export keeps it]"
AGE_BANDS = [(0, 29, "18-29"), (30, 44, "30-44"), (45, 59, "45-59"), (60, 200, "60+")]


def read_chat_export(support_chat: LandingZone) -> pd.DataFrame:
    """The support tool's conversation export, as it is: transcripts still hold personal data."""
    files = support_chat.files("conversations*.jsonl")
    if not files:
        raise FileNotFoundError(f"no conversation export in {support_chat.path}")
    return pd.concat([pd.read_json(f, lines=True, dtype={"claim_ref": str, "policy_no": str}) for f in files], ignore_index=True)


def age_band(birth: pd.Series, at: pd.Series) -> pd.Series:
    years = (at - birth).dt.days // 365
    bands = pd.Series("18-29", index=birth.index, dtype="str")
    for low, high, label in AGE_BANDS:
        bands[(years >= low) & (years <= high)] = label
    return bands


@domain.product(
    "conversations",
    kinds=["json"],
    resources=["support_chat"],
    inputs={
        "policies": InputPort("policies.policies", major=1, columns=["policy_id", "policyholder_id"]),
        "holders": InputPort("policies.policyholders", major=1, columns=["policyholder_id", "full_name", "date_of_birth"]),
    },
)
def conversations(context, policies: pd.DataFrame, holders: pd.DataFrame) -> Screened:
    """Read and redacted in one step: the raw export is never stored, not even privately or in the
    quarantine. A conversation about an unknown policy is quarantined without its transcript: whose
    name to redact cannot be known, and the export (the system of record) still holds it."""
    raw = read_chat_export(context.resources.support_chat)
    known = raw["policy_no"].isin(policies["policy_id"])
    raw = raw.assign(transcript=raw["transcript"].where(known, TRANSCRIPT_WITHHELD))
    rejects = Rejects()
    raw = rejects.unresolved(raw, "policy_no", policies["policy_id"], reason="unknown_policy", references="policies.policies")
    df = raw.merge(policies, left_on="policy_no", right_on="policy_id", how="inner").merge(holders, on="policyholder_id", how="left")
    started = pd.to_datetime(df["started_at"])
    return rejects.screened(pd.DataFrame(
        {
            "conversation_id": df["conv_id"],
            "policy_id": df["policy_id"],
            "policyholder_id": df["policyholder_id"],
            "claim_id": df["claim_ref"],
            "channel": df["channel"],
            "topic": df["topic"],
            "age_band": age_band(pd.to_datetime(df["date_of_birth"]), started),
            "started_at": started,
            "transcript": redact_contact_details(df["transcript"], names=df["full_name"], region=PHONE_REGION),
            "satisfaction": df["csat"].where(df["csat"] > 0).astype("Int64"),
        }
    ))


@domain.product("claim_contacts", inputs={"conversations": "conversations"})
def claim_contacts(conversations: pd.DataFrame) -> pd.DataFrame:
    about_claims = conversations.dropna(subset=["claim_id"])
    grouped = about_claims.groupby("claim_id", sort=True)
    return pd.DataFrame(
        {
            "policyholder_id": grouped["policyholder_id"].first(),
            "contacts": grouped.size(),
            "complaints": grouped["topic"].agg(lambda t: int((t == "complaint").sum())),
            "channels": grouped["channel"].nunique(),
            "first_contact_at": grouped["started_at"].min(),
            "last_contact_at": grouped["started_at"].max(),
        }
    ).reset_index()


defs = domain.definitions(resources={"support_chat": LandingZone.support_chat(domain.settings)}, jobs=[domain.job()])
