-- Cost per resolved outcome per workflow and tenant, counting failed attempts, retries and human corrections.
--
-- One row per workflow for all its tenants (all_tenants true, tenant NULL), then one per workflow
-- and tenant (items without a tenant in a row of their own, tenant NULL and all_tenants false).
--   first_try_rate        p: share of work items resolved by their first attempt
--   retry_share           share of AI spend on attempts 2, 3, …
--   ai_cost_per_resolved  cost_per_outcome(AI spend, resolved): failed attempts and retries are
--                         paid by successes
--   cost_per_resolved     cost_per_outcome(AI spend + human correction cost, resolved)
--   effective_cost        effective_cost(first-attempt spend per item, p): what a resolved item costs
--                         if every item were retried at first-attempt cost until it succeeds (T/p)
--   unpriced_llm_calls    LLM calls with no reported cost and no model price (left out of spend)
SELECT workflow,
       tenant,
       count(*)                                                   AS work_items,
       count(*) FILTER (WHERE resolved)                           AS resolved,
       avg(CASE WHEN first_try THEN 1.0 ELSE 0.0 END)             AS first_try_rate,
       sum(attempts)                                              AS attempts,
       sum(spend_usd)                                             AS spend_usd,
       sum(retry_spend_usd) / nullif(sum(spend_usd), 0)           AS retry_share,
       sum(human_cost_usd)                                        AS human_cost_usd,
       cost_per_outcome(spend_usd, resolved)                      AS ai_cost_per_resolved_usd,
       cost_per_outcome(spend_usd + human_cost_usd, resolved)     AS cost_per_resolved_usd,
       effective_cost(sum(attempt_1_spend_usd) / count(*),
                      avg(CASE WHEN first_try THEN 1.0 ELSE 0.0 END)) AS effective_cost_usd,
       sum(unpriced_llm_calls)                                    AS unpriced_llm_calls,
       grouping(tenant) = 1                                       AS all_tenants
FROM work_item_costs
GROUP BY GROUPING SETS ((workflow), (workflow, tenant))
