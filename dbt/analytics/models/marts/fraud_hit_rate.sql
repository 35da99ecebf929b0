-- How often claims flagged by the fraud model turn out to be fraud, by product line.
-- Only the investigation outcomes are grouped, not every event of every claim: a claim without one
-- has no row here, which the left join below reads as no outcome.
with outcomes as (
    select claim_id, max(event_type) as outcome
    from {{ source('claims', 'claim_events') }}
    where event_type in ('fraud_confirmed', 'fraud_cleared')
    group by 1
),
-- The scores carry each claim's product line: joining every claim for it cost more than the rest.
scored as (
    select s.product_line, s.claim_id, s.flagged, o.outcome
    from {{ source('fraud', 'fraud_scores') }} s
    left join outcomes o using (claim_id)
)
select
    product_line,
    count(*) as claims,
    count(*) filter (where flagged) as flagged,
    count(*) filter (where flagged and outcome is not null) as flagged_investigated,
    count(*) filter (where flagged and outcome = 'fraud_confirmed') as flagged_confirmed,
    case when count(*) filter (where flagged and outcome is not null) > 0
         then count(*) filter (where flagged and outcome = 'fraud_confirmed')::double
              / count(*) filter (where flagged and outcome is not null)
    end as hit_rate
from scored
group by 1
