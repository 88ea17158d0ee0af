-- Waste per workflow: dollars in attempts that produced nothing, in retrieval that fetched unused documents, and in models more expensive than the job needs.
--
--   failed_attempt_spend_usd   spend on attempts that did not resolve their item (retries' failed
--                              predecessors, and every attempt of items never resolved)
--   unresolved_item_spend_usd  of which: items never resolved by AI (failed, escalated, abandoned)
--   overfetch_spend_usd        retrieval spend × share of retrieved documents left unused
--   overkill_spend_usd         what routing_candidates would save by moving calls to a cheaper
--                              model that succeeds about as often
-- The three overlap (a failed attempt on an overkill model counts in both), so they are not summed.
WITH spent AS (
    SELECT workflow,
           sum(spend_usd)                                                   AS spend_usd,
           sum(CASE WHEN NOT succeeded THEN spend_usd END)                  AS failed_attempt_spend_usd,
           sum(CASE WHEN NOT item_resolved THEN spend_usd END)              AS unresolved_item_spend_usd,
           sum(overfetch_spend_usd)                                         AS overfetch_spend_usd,
           sum(unused_docs)                                                 AS unused_docs
    FROM attempt_costs
    GROUP BY workflow
),
overkill AS (
    SELECT workflow, sum(saving_usd) AS overkill_spend_usd FROM routing_candidates GROUP BY workflow
)
SELECT a.workflow,
       a.spend_usd,
       coalesce(a.failed_attempt_spend_usd, 0.0)                         AS failed_attempt_spend_usd,
       coalesce(a.failed_attempt_spend_usd, 0.0) / nullif(a.spend_usd, 0) AS failed_attempt_share,
       coalesce(a.unresolved_item_spend_usd, 0.0)                        AS unresolved_item_spend_usd,
       coalesce(a.unused_docs, 0)                                        AS unused_docs,
       coalesce(a.overfetch_spend_usd, 0.0)                              AS overfetch_spend_usd,
       coalesce(k.overkill_spend_usd, 0.0)                               AS overkill_spend_usd,
       coalesce(k.overkill_spend_usd, 0.0) / nullif(a.spend_usd, 0)      AS overkill_share
FROM spent a
LEFT JOIN overkill k ON a.workflow = k.workflow
