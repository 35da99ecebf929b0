"""A deterministic simulator of the insurance company's operational systems.

The mesh's source-aligned domains read from systems that exist outside the mesh: an operational
policy-administration database, a landing zone where the claims system drops files, and the export
of the customer-care chat tool. This module fabricates all three, seeded and vectorized, so that the
same mesh runs on a thousand rows in tests and on millions in benchmarks (``scale`` multiplies every
entity count).

The data is shaped so that the mesh has something real to do: operational codes to decode, claims
updated across landing batches, free text that leaks contact details, and fraud that correlates
with features a model can learn (high claimed/insured ratio, claims soon after policy start,
repeated contacts), labelled only for the claims that were investigated.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Seven months of history: the claims products are partitioned by day (one Dagster materialization
# per day and asset), so the span sets what a whole rebuild of the demo costs; see docs/partitions.md.
AS_OF = pd.Timestamp("2026-11-30")
FIRST_START = pd.Timestamp("2026-05-01")
BASE_POLICYHOLDERS = 1000

FIRST_NAMES = np.array(
    "Olivia Liam Emma Noah Ava Oliver Sophia Elijah Isabella James Mia William Amelia Lucas "
    "Harper Henry Evelyn Theodore Aisha Mateo Chloe Arjun Freya Kofi Ingrid Hiro Leila Tomasz".split()
)
LAST_NAMES = np.array(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Okafor Nakamura Kowalski Silva".split()
)
CITIES = np.array("London Leeds Bristol Glasgow Cardiff Belfast Manchester York Norwich Bath".split())
PRODUCT_CODES = np.array(["AUTO", "HOME", "HLTH", "TRVL"])
PRODUCT_WEIGHTS = np.array([0.45, 0.3, 0.15, 0.1])
SUM_INSURED_MEAN = {"AUTO": 18_000.0, "HOME": 250_000.0, "HLTH": 50_000.0, "TRVL": 5_000.0}
# Typical claim severity (GBP); premiums are priced for a ~65% loss ratio at 0.4 claims a year.
CLAIM_SEVERITY = {"AUTO": 3_000.0, "HOME": 6_000.0, "HLTH": 2_500.0, "TRVL": 800.0}
CLAIM_FREQUENCY = 0.4
TARGET_LOSS_RATIO = 0.65
CLAIM_TYPES = {
    "AUTO": ["collision", "theft", "windscreen", "vandalism"],
    "HOME": ["water_damage", "fire", "burglary", "storm"],
    "HLTH": ["hospital_stay", "outpatient", "prescription"],
    "TRVL": ["cancellation", "lost_luggage", "medical_abroad"],
}
CLAIM_TOPICS = np.array(["claim_status", "claim_documents", "complaint", "payment_query"])
OTHER_TOPICS = np.array(["billing", "coverage_question", "address_change", "cancellation"])


@dataclass(frozen=True)
class SourceLayout:
    """Where each simulated operational system lives under the sources folder."""

    root: Path

    @property
    def policy_db(self) -> Path:
        return self.root / "policy_admin" / "policy_admin.sqlite"

    @property
    def claims_landing(self) -> Path:
        return self.root / "claims_landing"

    @property
    def chat_export(self) -> Path:
        return self.root / "support_chat" / "conversations.jsonl"

    @property
    def marker(self) -> Path:
        return self.root / "SIMULATION.json"


def _rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream per entity, so adding a column to one entity does not shift another.
    return np.random.default_rng([seed, sum(map(ord, stream))])


def _counts(scale: float) -> int:
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(20, int(round(BASE_POLICYHOLDERS * scale)))


def simulate_customers(n: int, seed: int) -> pd.DataFrame:
    rng = _rng(seed, "customers")
    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), n)]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), n)]
    cust_no = np.arange(1, n + 1)
    suffix = cust_no.astype(str)
    email = np.char.add(np.char.add(np.char.add(np.char.lower(first.astype(str)), "."), np.char.lower(last.astype(str))), suffix)
    email = np.char.add(email, "@example.com")
    phone = np.char.add("+44 7700 9", np.char.zfill(rng.integers(0, 100_000, n).astype(str), 5))
    birth = pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 365 * 55, n), unit="D")
    created = FIRST_START - pd.to_timedelta(rng.integers(0, 365 * 3, n), unit="D")
    return pd.DataFrame(
        {
            "cust_no": cust_no,
            "first_nm": first,
            "last_nm": last,
            "email_addr": email,
            "phone_no": phone,
            "birth_dt": birth.strftime("%Y-%m-%d"),
            "city_nm": CITIES[rng.integers(0, len(CITIES), n)],
            "post_cd": np.char.add("AB", rng.integers(1, 99, n).astype(str)),
            "created_ts": created.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def simulate_policies(customers: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = _rng(seed, "policies")
    n = int(len(customers) * 1.5)
    cust = customers["cust_no"].to_numpy()[rng.integers(0, len(customers), n)]
    product = PRODUCT_CODES[rng.choice(len(PRODUCT_CODES), size=n, p=PRODUCT_WEIGHTS)]
    mean = np.vectorize(SUM_INSURED_MEAN.get)(product)
    sum_insured = np.round(mean * rng.lognormal(0.0, 0.35, n), -2)
    expected_loss = np.vectorize(CLAIM_SEVERITY.get)(product) * CLAIM_FREQUENCY * 0.8
    premium_cents = np.round(expected_loss / TARGET_LOSS_RATIO * rng.lognormal(0.0, 0.15, n) * 100).astype(np.int64)
    start = FIRST_START + pd.to_timedelta(rng.integers(0, (AS_OF - FIRST_START).days - 30, n), unit="D")
    end = start + pd.DateOffset(years=1)
    status = np.where(end < AS_OF, np.where(rng.random(n) < 0.6, "L", "A"), "A")
    status = np.where(rng.random(n) < 0.04, "C", status)
    return pd.DataFrame(
        {
            "contract_no": np.char.add("POL-", np.char.zfill(np.arange(1, n + 1).astype(str), 7)),
            "cust_no": cust,
            "product_cd": product,
            "start_dt": start.strftime("%Y-%m-%d"),
            "end_dt": end.strftime("%Y-%m-%d"),
            "premium_amt_cents": premium_cents,
            "sum_insured_amt": sum_insured,
            "status_cd": status,
            "sales_channel": np.array(["broker", "direct", "online"])[rng.integers(0, 3, n)],
        }
    )


def simulate_claims(policies: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Claims with their full lifecycle; ``is_fraud`` is ground truth that never leaves here."""
    rng = _rng(seed, "claims")
    n = int(len(policies) * 0.4)
    idx = rng.integers(0, len(policies), n)
    pol = policies.iloc[idx].reset_index(drop=True)
    is_fraud = rng.random(n) < 0.08
    start = pd.to_datetime(pol["start_dt"])
    # Fraud comes early in the policy and claims a large share of the insured sum.
    days_in = np.where(is_fraud, rng.integers(2, 150, n), rng.integers(5, 360, n))
    # a claim happens before the simulation's day: a late draw wraps around into the days available
    available = np.maximum(1, ((AS_OF - pd.Timedelta(days=3)) - start).dt.days.to_numpy())
    days_in = np.where(days_in < available, days_in, days_in % available)
    incident = start + pd.to_timedelta(days_in, unit="D")
    incident = incident.where(incident < AS_OF - pd.Timedelta(days=3), AS_OF - pd.Timedelta(days=3))
    delay = np.where(is_fraud, rng.integers(1, 30, n), rng.integers(0, 15, n))
    reported = incident + pd.to_timedelta(delay, unit="D") + pd.to_timedelta(rng.integers(8, 18, n), unit="h")
    reported = reported.where(reported < AS_OF, AS_OF - pd.Timedelta(hours=1))
    product = pol["product_cd"].to_numpy()
    severity = np.vectorize(CLAIM_SEVERITY.get)(product)
    inflation = np.where(is_fraud, rng.lognormal(0.9, 0.6, n), rng.lognormal(-0.3, 0.8, n))
    amount = np.round(np.minimum(severity * inflation, pol["sum_insured_amt"].to_numpy()), 2)
    claim_type = np.empty(n, dtype=object)
    for code, types in CLAIM_TYPES.items():
        mask = product == code
        claim_type[mask] = np.array(types)[rng.integers(0, len(types), mask.sum())]
    investigated = is_fraud & (rng.random(n) < 0.7) | (~is_fraud & (rng.random(n) < 0.18))
    cycle_days = np.ceil(rng.gamma(2.0, 9.0, n) + np.where(investigated, 20, 0))
    settled = reported + pd.to_timedelta(cycle_days, unit="D")
    open_now = settled > AS_OF
    # Investigations confirm most, not all, fraud; a confirmed fraud is rejected.
    confirmed = investigated & is_fraud & (rng.random(n) < 0.8)
    rejected = confirmed | (~is_fraud & (rng.random(n) < 0.05))
    status = np.where(open_now, "open", np.where(rejected, "rejected", "paid"))
    paid = np.where(status == "paid", np.round(amount * rng.uniform(0.7, 1.0, n), 2), 0.0)
    return pd.DataFrame(
        {
            "claim_ref": np.char.add("CLM-", np.char.zfill(np.arange(1, n + 1).astype(str), 7)),
            "policy_no": pol["contract_no"].to_numpy(),
            "claim_type": claim_type.astype(str),
            "incident_date": incident.dt.strftime("%Y-%m-%d"),
            "reported_at": reported.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "amount_claimed": amount,
            "status": status,
            "settled_at": settled.where(~open_now).dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "amount_paid": paid,
            "_investigated": investigated,
            "_fraud": is_fraud,
            "_confirmed": confirmed,
        }
    )


def simulate_claim_events(claims: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = _rng(seed, "claim_events")
    reported = pd.to_datetime(claims["reported_at"])
    settled = pd.to_datetime(claims["settled_at"])
    frames = [pd.DataFrame({"claim_ref": claims["claim_ref"], "event": "opened", "at": reported})]
    assessed = reported + pd.to_timedelta(rng.integers(1, 72, len(claims)), unit="h")
    keep = assessed < AS_OF
    frames.append(pd.DataFrame({"claim_ref": claims["claim_ref"][keep], "event": "assessed", "at": assessed[keep]}))
    inv = claims["_investigated"].to_numpy() & keep.to_numpy()
    inv_at = assessed + pd.Timedelta(days=2)
    frames.append(pd.DataFrame({"claim_ref": claims["claim_ref"][inv], "event": "fraud_investigation_opened", "at": inv_at[inv]}))
    closed = inv & settled.notna().to_numpy()
    outcome = np.where(claims["_confirmed"].to_numpy(), "fraud_confirmed", "fraud_cleared")
    frames.append(
        pd.DataFrame({"claim_ref": claims["claim_ref"][closed], "event": outcome[closed], "at": (settled - pd.Timedelta(days=1))[closed]})
    )
    done = settled.notna().to_numpy()
    final = np.where(claims["status"].to_numpy() == "paid", "paid", "rejected")
    frames.append(pd.DataFrame({"claim_ref": claims["claim_ref"][done], "event": final[done], "at": settled[done]}))
    events = pd.concat(frames, ignore_index=True).sort_values(["at", "claim_ref"], kind="stable").reset_index(drop=True)
    events["event_no"] = np.arange(1, len(events) + 1)
    events["at"] = events["at"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return events


def simulate_conversations(customers: pd.DataFrame, policies: pd.DataFrame, claims: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Chat-tool export: free text in which customers volunteer names, emails and phone numbers."""
    rng = _rng(seed, "conversations")
    contacts = rng.poisson(np.where(claims["_fraud"].to_numpy(), 2.2, 0.9))
    c_idx = np.repeat(np.arange(len(claims)), contacts)
    claim_part = pd.DataFrame(
        {
            "policy_no": claims["policy_no"].to_numpy()[c_idx],
            "claim_ref": claims["claim_ref"].to_numpy()[c_idx],
            "topic": CLAIM_TOPICS[rng.integers(0, len(CLAIM_TOPICS), len(c_idx))],
            "at": pd.to_datetime(claims["reported_at"]).to_numpy()[c_idx]
            + pd.to_timedelta(rng.integers(1, 24 * 30, len(c_idx)), unit="h").to_numpy(),
        }
    )
    n_other = int(len(policies) * 0.3)
    p_idx = rng.integers(0, len(policies), n_other)
    other = pd.DataFrame(
        {
            "policy_no": policies["contract_no"].to_numpy()[p_idx],
            "claim_ref": None,
            "topic": OTHER_TOPICS[rng.integers(0, len(OTHER_TOPICS), n_other)],
            "at": pd.to_datetime(policies["start_dt"]).to_numpy()[p_idx]
            + pd.to_timedelta(rng.integers(1, 24 * 300, n_other), unit="h").to_numpy(),
        }
    )
    conv = pd.concat([claim_part, other], ignore_index=True)
    conv = conv[conv["at"] < AS_OF].sort_values("at", kind="stable").reset_index(drop=True)
    cust = customers.set_index("cust_no")
    holder = policies.set_index("contract_no").loc[conv["policy_no"], "cust_no"].to_numpy()
    k = len(conv)
    # These three draws decide who introduces themselves and who leaves contact details; the forms
    # they write them in come from a stream of their own, so every other column stays as it was.
    style = rng.integers(0, 3, k)
    leaves_contact = rng.random(k) < 0.6
    by_email = rng.random(k) < 0.5
    conv["transcript"] = _transcripts(conv, cust.loc[holder].reset_index(drop=True), claims, style, leaves_contact, by_email, seed)
    conv["conv_id"] = np.char.add("CNV-", np.char.zfill(np.arange(1, k + 1).astype(str), 8))
    conv["channel"] = np.array(["chat", "phone", "email"])[rng.integers(0, 3, k)]
    conv["csat"] = np.where(rng.random(k) < 0.7, rng.integers(1, 6, k), 0)
    conv["started_at"] = pd.to_datetime(conv.pop("at")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    return conv[["conv_id", "policy_no", "claim_ref", "channel", "topic", "started_at", "transcript", "csat"]]


TITLES = np.array(["Mr", "Mrs", "Ms", "Dr"])


def _pick(rng: np.random.Generator, forms: list[pd.Series]) -> pd.Series:
    """One of ``forms`` per row, chosen uniformly."""
    choice = rng.integers(0, len(forms), len(forms[0]))
    return pd.Series(np.select([choice == i for i in range(len(forms))], [f.to_numpy(dtype=object) for f in forms]), dtype="str")


def _digits(rng: np.random.Generator, n: int, width: int) -> pd.Series:
    return pd.Series(np.char.zfill(rng.integers(0, 10**width, n).astype(str), width), dtype="str")


def _transcripts(
    conv: pd.DataFrame, holder: pd.DataFrame, claims: pd.DataFrame, style: np.ndarray, leaves_contact: np.ndarray, by_email: np.ndarray, seed: int
) -> np.ndarray:
    """Chat text that leaks personal data the way customers write it, next to ids, amounts and dates.

    Names come as "Olivia Smith", "olivia smith", "OLIVIA SMITH", "Olivia", "Olivia's" or "Mrs Smith"; the
    policyholder's phone (+44 7700 9xxxxx) in nine national and international shapes; some customers
    give a second number in fictional ranges (+44 20 7946 0xxx, (555) 1xx-xxxx, 555.1xx.xxxx,
    0049 30 1xxxxxx). Policy and claim ids, amounts and dates must survive redaction.
    """
    rng = _rng(seed, "transcripts")
    k = len(conv)
    first, last = holder["first_nm"].astype("str"), holder["last_nm"].astype("str")
    title = pd.Series(TITLES[rng.integers(0, len(TITLES), k)], dtype="str")
    full = first + " " + last
    name = _pick(rng, [full, full, full.str.lower(), full.str.upper(), first])
    addressed = _pick(rng, [title + " " + last, first, title + ". " + last])
    nsn = holder["phone_no"].astype("str").str.replace(r"\D", "", regex=True).str[2:]  # 7700 9xxxxx
    area, rest = nsn.str[:4], nsn.str[4:]
    phone = _pick(
        rng,
        [
            "+44 " + area + " " + rest,
            "0" + area + " " + rest,
            "0" + area + "-" + rest.str[:3] + "-" + rest.str[3:],
            "(0" + area + ") " + rest,
            "0" + area + "." + rest.str[:3] + "." + rest.str[3:],
            "0044 " + area + " " + rest,
            "+44 (0)" + area + " " + rest.str[:3] + " " + rest.str[3:],
            "+44" + nsn,
            "0" + nsn,
        ],
    )
    other = _pick(
        rng,
        [
            "+44 20 7946 0" + _digits(rng, k, 3),
            "(555) 1" + _digits(rng, k, 2) + "-" + _digits(rng, k, 4),
            "555.1" + _digits(rng, k, 2) + "." + _digits(rng, k, 4),
            "0049 30 1" + _digits(rng, k, 6),
        ],
    )
    email = holder["email_addr"].astype("str")
    email = _pick(rng, [email, email, email.str.title(), "mailto:" + email])
    claim = claims.set_index("claim_ref").reindex(conv["claim_ref"])
    amount = pd.Series(claim["amount_claimed"].to_numpy(), dtype="float64").map("£{:,.2f}".format)
    about = pd.Series(
        np.where(
            conv["claim_ref"].notna(),
            "my claim " + conv["claim_ref"].fillna("") + " for " + amount + ", incident on " + claim["incident_date"].fillna("").to_numpy(),
            "policy " + conv["policy_no"],
        ),
        dtype="str",
    )
    anonymous = np.where(rng.random(k) < 0.5, "Good morning. ", "Good morning, I am calling on " + first + "'s behalf. ")
    opener = np.where(style == 0, "Hello, this is " + name + ". ", np.where(style == 1, "Hi, " + name + " here. ", anonymous))
    second = np.where(rng.random(k) < 0.3, "Or try my other number " + other + ". ", "")
    contact = np.where(
        leaves_contact,
        np.where(by_email, "You can email me at " + email + ". ", "Please call me back on " + phone + ". " + second),
        "",
    )
    ask = "I have a question about " + about + " (" + conv["topic"].str.replace("_", " ").to_numpy() + "). "
    reply = "Agent: Thanks " + addressed + ", we have noted your request."
    return (opener + ask + contact + reply).to_numpy(dtype=object).astype(str)


def _write_policy_db(path: Path, customers: pd.DataFrame, policies: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as con:
        customers.to_sql("customer", con, index=False)
        policies.to_sql("policy_contract", con, index=False)
        con.execute("CREATE UNIQUE INDEX ux_customer ON customer(cust_no)")
        con.execute("CREATE UNIQUE INDEX ux_policy ON policy_contract(contract_no)")
    os.replace(tmp, path)


def _bad_claims(public: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A few source rows the claims domain must turn away (new claim references, so good counts stay).

    - ``unexpected_columns``: a whole extra file whose export grew a column (``adjuster_note``);
    - ``unknown_policy``: claims under policy numbers the policy system has never issued;
    - ``conflicting_states``: one claim twice in the same batch, once open and once paid.
    """
    template = public.iloc[[0]].reset_index(drop=True)

    def new(refs: list[str], **changes) -> pd.DataFrame:
        rows = pd.concat([template] * len(refs), ignore_index=True).assign(claim_ref=refs)
        return rows.assign(**changes)

    layout = new(["CLM-9000001", "CLM-9000002"]).assign(adjuster_note="see attached photos")
    unknown = new(["CLM-9000011", "CLM-9000012", "CLM-9000013"], policy_no=["POL-9999991", "POL-9999992", "POL-9999993"])
    conflict = pd.concat([new(["CLM-9000021"], status="open", settled_at=None, amount_paid=0.0), new(["CLM-9000021"], status="paid")], ignore_index=True)
    return {"unexpected_columns": layout, "unknown_policy": unknown, "conflicting_states": conflict}


def _write_landing(folder: Path, claims: pd.DataFrame, events: pd.DataFrame, batches: int, rejects: bool = False) -> dict[str, int]:
    """Claims arrive in batches by reporting time; each batch has a CSV of claims and a JSONL of events.

    With ``rejects``, the last batch also carries claims under unknown policies and one conflicting
    duplicate, and one more file arrives with an unexpected column; returns those counts by reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    public = claims.drop(columns=["_investigated", "_fraud", "_confirmed"])
    order = np.argsort(public["reported_at"].to_numpy(), kind="stable")
    bad = _bad_claims(public) if rejects else {}
    for number, part in enumerate(np.array_split(order, batches), start=1):
        batch = public.iloc[part]
        stem = f"batch_{number:04d}"
        ev = events[events["claim_ref"].isin(batch["claim_ref"])]
        if bad and number == batches:
            batch = pd.concat([batch, bad["unknown_policy"], bad["conflicting_states"]], ignore_index=True)
        batch.to_csv(folder / f"claims_{stem}.csv", index=False)
        with open(folder / f"claim_events_{stem}.jsonl", "w") as fh:
            for record in ev.to_dict(orient="records"):
                fh.write(json.dumps(record) + "\n")
    if bad:
        bad["unexpected_columns"].to_csv(folder / f"claims_batch_{batches + 1:04d}.csv", index=False)
    return {reason: len(rows) for reason, rows in bad.items()}


def simulate(root: str | os.PathLike, scale: float = 1.0, seed: int = 7, landing_batches: int = 4, rejects: bool = False) -> dict:
    """(Re)create every operational source under ``root``; returns the row counts written.

    ``rejects`` adds a small, fixed set of rows the domains must quarantine (see :func:`_bad_claims`;
    plus one conversation about an unknown policy). They are extra rows: every count of good rows
    stays the same. The summary's ``rejects`` lists them per domain and reason.
    """
    layout = SourceLayout(Path(root))
    customers = simulate_customers(_counts(scale), seed)
    policies = simulate_policies(customers, seed)
    claims = simulate_claims(policies, seed)
    events = simulate_claim_events(claims, seed)
    conversations = simulate_conversations(customers, policies, claims, seed)
    _write_policy_db(layout.policy_db, customers, policies)
    claim_rejects = _write_landing(layout.claims_landing, claims, events, landing_batches, rejects)
    layout.chat_export.parent.mkdir(parents=True, exist_ok=True)
    exported = conversations
    if rejects:
        stray = conversations.iloc[[0]].assign(conv_id="CNV-99000001", policy_no="POL-9999999", claim_ref=None)
        exported = pd.concat([conversations, stray], ignore_index=True)
    exported.to_json(layout.chat_export, orient="records", lines=True)
    summary = {
        "scale": scale,
        "seed": seed,
        "customers": len(customers),
        "policies": len(policies),
        "claims": len(claims),
        "claim_events": len(events),
        "conversations": len(conversations),
    }
    if rejects:
        summary["rejects"] = {"claims": claim_rejects, "customer_care": {"unknown_policy": len(exported) - len(conversations)}}
    layout.marker.write_text(json.dumps(summary, indent=2))
    return summary


def simulation_summary(root: str | os.PathLike) -> dict | None:
    marker = SourceLayout(Path(root)).marker
    return json.loads(marker.read_text()) if marker.exists() else None
