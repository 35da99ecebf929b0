-- Customer-care contacts per claim, by product line and claim status.
select
    c.product_line,
    c.status,
    count(*) as claims,
    count(cc.claim_id) as claims_with_contact,
    coalesce(sum(cc.contacts), 0)::bigint as contacts,
    coalesce(sum(cc.complaints), 0)::bigint as complaints,
    coalesce(sum(cc.contacts), 0)::double / count(*) as contacts_per_claim
from {{ source('claims', 'claims') }} c
left join {{ source('customer_care', 'claim_contacts') }} cc using (claim_id)
group by 1, 2
