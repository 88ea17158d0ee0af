-- The retry long tail per workflow: items by attempts needed, spend by attempt number, cost percentiles per item, the costliest 1 %.
--
--   items_N_attempts         work items that needed N attempts (4plus: four or more)
--   spend_share_attempt_N    share of the workflow's AI spend made on attempt N (the four sum to 1)
--   p50/p90/p99_item_cost    percentiles of AI spend per work item (exact, interpolated)
--   top_1pct_spend_share     share of spend in the costliest 1 % of items (at least one item)
WITH ranked AS (
    SELECT workflow,
           spend_usd,
           row_number() OVER (PARTITION BY workflow ORDER BY spend_usd DESC, work_item_id) AS cost_rank,
           count(*) OVER (PARTITION BY workflow)                                         AS items
    FROM work_item_costs
)
SELECT w.workflow,
       count(*)                                                    AS work_items,
       sum(CASE WHEN w.attempts <= 1 THEN 1 ELSE 0 END)            AS items_1_attempt,
       sum(CASE WHEN w.attempts = 2 THEN 1 ELSE 0 END)             AS items_2_attempts,
       sum(CASE WHEN w.attempts = 3 THEN 1 ELSE 0 END)             AS items_3_attempts,
       sum(CASE WHEN w.attempts >= 4 THEN 1 ELSE 0 END)            AS items_4plus_attempts,
       sum(w.attempt_1_spend_usd) / nullif(sum(w.spend_usd), 0)    AS spend_share_attempt_1,
       sum(w.attempt_2_spend_usd) / nullif(sum(w.spend_usd), 0)    AS spend_share_attempt_2,
       sum(w.attempt_3_spend_usd) / nullif(sum(w.spend_usd), 0)    AS spend_share_attempt_3,
       sum(w.attempt_4plus_spend_usd) / nullif(sum(w.spend_usd), 0) AS spend_share_attempt_4plus,
       percentile_cont(w.spend_usd, 0.5)                           AS p50_item_cost_usd,
       percentile_cont(w.spend_usd, 0.9)                           AS p90_item_cost_usd,
       percentile_cont(w.spend_usd, 0.99)                          AS p99_item_cost_usd,
       max(t.top_spend_usd) / nullif(sum(w.spend_usd), 0)          AS top_1pct_spend_share
FROM work_item_costs w
JOIN (SELECT workflow, sum(CASE WHEN cost_rank <= ceil(0.01 * items) THEN spend_usd ELSE 0 END) AS top_spend_usd
      FROM ranked GROUP BY workflow) t ON w.workflow = t.workflow
GROUP BY w.workflow
