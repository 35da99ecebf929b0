-- Claims volume, settlement and cycle time by reporting week (weeks start on Monday).
select
    cast(date_trunc('week', reported_at) as date) as week_start,
    count(*) as claims_reported,
    count(*) filter (where status <> 'open') as claims_settled,
    median(cycle_time_days) as median_cycle_time_days,
    sum(amount_paid) as amount_paid
from {{ source('claims', 'claims') }}
group by 1
