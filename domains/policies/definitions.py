"""policies: source-aligned domain over the operational policy-administration database."""

import pandas as pd

from mesh_platform import Domain, SqlDatabase

domain = Domain.load(__file__)

PRODUCT_LINES = {"AUTO": "auto", "HOME": "home", "HLTH": "health", "TRVL": "travel"}
STATUSES = {"A": "active", "L": "lapsed", "C": "cancelled"}


def policyholder_id(cust_no: pd.Series) -> pd.Series:
    return "PH-" + cust_no.astype(int).astype(str).str.zfill(7)


@domain.product("policyholders", kinds=["sqlite"], resources=["policy_admin"])
def policyholders(context) -> pd.DataFrame:
    raw = context.resources.policy_admin.query(
        "SELECT cust_no, first_nm, last_nm, email_addr, phone_no, birth_dt, city_nm, post_cd, created_ts FROM customer"
    )
    return pd.DataFrame(
        {
            "policyholder_id": policyholder_id(raw["cust_no"]),
            "full_name": raw["first_nm"].str.strip() + " " + raw["last_nm"].str.strip(),
            "email": raw["email_addr"].str.strip().str.lower(),
            "phone": raw["phone_no"].str.strip(),
            "date_of_birth": pd.to_datetime(raw["birth_dt"]).dt.date,
            "city": raw["city_nm"],
            "postcode_district": raw["post_cd"],
            "customer_since": pd.to_datetime(raw["created_ts"]),
        }
    )


@domain.product("policies", kinds=["sqlite"], resources=["policy_admin"])
def policies(context) -> pd.DataFrame:
    raw = context.resources.policy_admin.query(
        "SELECT contract_no, cust_no, product_cd, sales_channel, start_dt, end_dt, "
        "premium_amt_cents, sum_insured_amt, status_cd FROM policy_contract"
    )
    return pd.DataFrame(
        {
            "policy_id": raw["contract_no"],
            "policyholder_id": policyholder_id(raw["cust_no"]),
            "product_line": raw["product_cd"].map(PRODUCT_LINES),
            "sales_channel": raw["sales_channel"],
            "start_date": pd.to_datetime(raw["start_dt"]).dt.date,
            "end_date": pd.to_datetime(raw["end_dt"]).dt.date,
            "annual_premium": raw["premium_amt_cents"] / 100.0,
            "sum_insured": raw["sum_insured_amt"].astype(float),
            "status": raw["status_cd"].map(STATUSES),
        }
    )


defs = domain.definitions(
    resources={"policy_admin": SqlDatabase.policy_admin(domain.settings)},
    jobs=[domain.job()],
)
