-- Value per extra dollar of inference: the slope of work-item value on work-item AI spend, per workflow and per model tier.
--
-- One row per workflow with model NULL (all items), then one per workflow and model, where an
-- item's model is the one that took most of its LLM spend. value_per_extra_dollar is
-- marginal_token_utility(value_usd, spend_usd) across the items: above 1, spending more on an
-- item has gone with more than a dollar of value per dollar; below 0, with less value.
WITH item_model AS (
    SELECT work_item_id, model
    FROM (SELECT work_item_id, model,
                 row_number() OVER (PARTITION BY work_item_id ORDER BY sum(spend_usd) DESC NULLS LAST, model) AS pick
          FROM priced_spans WHERE kind = 'llm' AND model IS NOT NULL
          GROUP BY work_item_id, model) ranked
    WHERE pick = 1
)
SELECT w.workflow,
       m.model,
       count(*)                                            AS work_items,
       avg(w.spend_usd)                                    AS avg_spend_usd,
       avg(w.value_usd)                                    AS avg_value_usd,
       marginal_token_utility(w.value_usd, w.spend_usd)    AS value_per_extra_dollar
FROM work_item_costs w
LEFT JOIN item_model m ON w.work_item_id = m.work_item_id
GROUP BY GROUPING SETS ((w.workflow), (w.workflow, m.model))
