-- Building block: one row per work item, its outcome beside what it cost (first attempt, each retry, human corrections).
--
-- Work items are those with an outcome row; spans of items without one (still open) are left out.
--   resolved   the outcome is 'resolved'
--   first_try  the first attempt resolved it (resolved_attempt = 1): the success behind every
--              first-try rate (p in T/p)
--   attempts   the highest attempt number seen for the item
WITH item_spend AS (
    SELECT work_item_id,
           max(attempt)                                              AS attempts,
           sum(spend_usd)                                            AS spend_usd,
           sum(CASE WHEN attempt = 1 THEN spend_usd END)             AS attempt_1_spend_usd,
           sum(CASE WHEN attempt = 2 THEN spend_usd END)             AS attempt_2_spend_usd,
           sum(CASE WHEN attempt = 3 THEN spend_usd END)             AS attempt_3_spend_usd,
           sum(CASE WHEN attempt >= 4 THEN spend_usd END)            AS attempt_4plus_spend_usd,
           sum(CASE WHEN kind = 'llm' AND spend_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_llm_calls
    FROM priced_spans
    GROUP BY work_item_id
)
SELECT o.work_item_id,
       o.workflow,
       o.tenant,
       o.outcome,
       o.resolved_attempt,
       coalesce(o.outcome = 'resolved', false)          AS resolved,
       coalesce(o.resolved_attempt = 1, false)          AS first_try,
       coalesce(o.value_usd, 0.0)                       AS value_usd,
       coalesce(o.human_minutes, 0.0)                   AS human_minutes,
       coalesce(o.human_cost_usd, 0.0)                  AS human_cost_usd,
       o.closed_at,
       coalesce(s.attempts, 0)                          AS attempts,
       coalesce(s.spend_usd, 0.0)                       AS spend_usd,
       coalesce(s.attempt_1_spend_usd, 0.0)             AS attempt_1_spend_usd,
       coalesce(s.spend_usd, 0.0) - coalesce(s.attempt_1_spend_usd, 0.0) AS retry_spend_usd,
       coalesce(s.attempt_2_spend_usd, 0.0)             AS attempt_2_spend_usd,
       coalesce(s.attempt_3_spend_usd, 0.0)             AS attempt_3_spend_usd,
       coalesce(s.attempt_4plus_spend_usd, 0.0)         AS attempt_4plus_spend_usd,
       coalesce(s.unpriced_llm_calls, 0)                AS unpriced_llm_calls
FROM outcomes o
LEFT JOIN item_spend s ON o.work_item_id = s.work_item_id
