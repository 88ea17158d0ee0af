-- AI against outsourcing per workflow: cost per completed unit beside the BPO unit price, the break-even first-try rate, and a verdict.
--
-- The baseline is the workflow's row in baselines with the latest valid_from (rows for a single
-- tenant are not used here).
--   ai_cost_per_unit_usd       (AI spend + human correction cost) / resolved items (cost_per_outcome's
--                              cost_per_resolved_usd)
--   ai_cost_per_attempt_usd    AI spend / attempts
--   break_even_first_try_rate  break_even_rate(cost per attempt, BPO price): below this first-try
--                              rate, T/p exceeds the BPO price
--   saving_vs_bpo_usd          (BPO price − AI cost per unit) × resolved items; negative = BPO cheaper
WITH baseline AS (
    SELECT workflow, bpo_unit_price_usd, human_unit_cost_usd
    FROM (SELECT *, row_number() OVER (PARTITION BY workflow ORDER BY valid_from DESC NULLS LAST) AS pick
          FROM baselines WHERE tenant IS NULL) latest
    WHERE pick = 1
),
ai AS (
    SELECT workflow, resolved, first_try_rate, attempts, spend_usd, human_cost_usd, cost_per_resolved_usd
    FROM cost_per_outcome
    WHERE all_tenants
)
SELECT ai.workflow,
       ai.resolved,
       ai.first_try_rate,
       ai.cost_per_resolved_usd                                                    AS ai_cost_per_unit_usd,
       b.bpo_unit_price_usd,
       b.human_unit_cost_usd,
       ai.spend_usd / nullif(ai.attempts, 0)                                       AS ai_cost_per_attempt_usd,
       break_even_rate(ai.spend_usd / nullif(ai.attempts, 0), b.bpo_unit_price_usd) AS break_even_first_try_rate,
       CASE
           WHEN b.bpo_unit_price_usd IS NULL THEN 'no BPO price'
           WHEN ai.resolved = 0 THEN 'BPO cheaper'
           WHEN ai.cost_per_resolved_usd < b.bpo_unit_price_usd THEN 'AI cheaper'
           ELSE 'BPO cheaper'
       END                                                                         AS verdict,
       (b.bpo_unit_price_usd - ai.cost_per_resolved_usd) * ai.resolved
                                                                                   AS saving_vs_bpo_usd
FROM ai
LEFT JOIN baseline b ON ai.workflow = b.workflow
