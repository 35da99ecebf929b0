-- Claims paid over premiums written, by product line.
with written as (
    select product_line, count(*) as policies, sum(annual_premium) as premium_written
    from {{ source('policies', 'policies') }}
    group by 1
),
paid as (
    select product_line, sum(amount_paid) as claims_paid
    from {{ source('claims', 'claims') }}
    group by 1
)
select
    w.product_line,
    w.policies,
    w.premium_written,
    coalesce(p.claims_paid, 0.0) as claims_paid,
    coalesce(p.claims_paid, 0.0) / w.premium_written as loss_ratio
from written w
left join paid p using (product_line)
