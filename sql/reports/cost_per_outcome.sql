-- Cost per resolved outcome per workflow and tenant, counting failed attempts, retries and human corrections.
--
-- One row per workflow with tenant NULL (all tenants), then one per workflow and tenant.
--   first_try_rate        p: share of work items resolved by their first attempt
--   retry_share           share of AI spend on attempts 2, 3, …
--   ai_cost_per_resolved  AI spend / resolved items: failed attempts and retries are paid by successes
--   cost_per_resolved     (AI spend + human correction cost) / resolved items
--   effective_cost        effective_cost(first-attempt spend per item, p): what a resolved item costs
--                         if every item were retried at first-attempt cost until it succeeds (T/p)
--   unpriced_llm_calls    LLM calls with no reported cost and no model price (left out of spend)
SELECT workflow,
       tenant,
       count(*)                                                            AS work_items,
       sum(CASE WHEN outcome = 'resolved' THEN 1 ELSE 0 END)               AS resolved,
       avg(CASE WHEN resolved_attempt = 1 THEN 1.0 ELSE 0.0 END)           AS first_try_rate,
       sum(attempts)                                                       AS attempts,
       sum(spend_usd)                                                      AS spend_usd,
       sum(retry_spend_usd) / nullif(sum(spend_usd), 0)                    AS retry_share,
       sum(human_cost_usd)                                                 AS human_cost_usd,
       sum(spend_usd) / nullif(sum(CASE WHEN outcome = 'resolved' THEN 1 ELSE 0 END), 0)
                                                                           AS ai_cost_per_resolved_usd,
       (sum(spend_usd) + sum(human_cost_usd))
           / nullif(sum(CASE WHEN outcome = 'resolved' THEN 1 ELSE 0 END), 0) AS cost_per_resolved_usd,
       effective_cost(sum(attempt_1_spend_usd) / count(*),
                      avg(CASE WHEN resolved_attempt = 1 THEN 1.0 ELSE 0.0 END)) AS effective_cost_usd,
       sum(unpriced_llm_calls)                                             AS unpriced_llm_calls
FROM work_item_costs
GROUP BY GROUPING SETS ((workflow), (workflow, tenant))
