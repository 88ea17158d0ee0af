-- Routing candidates: per workflow and model, success rate and cost per attempt, and what moving that model's calls to a cheaper model that succeeds about as often would save.
--
-- Parameter (edit here): success_tolerance, how much lower a cheaper model's success rate may be
-- (0.05 = five percentage points) for it to count as doing the job as well.
-- An attempt succeeded when its work item's outcome says it was resolved by that attempt; an
-- attempt's model is the model of its LLM calls. The what-if reprices the expensive model's LLM
-- calls with token_cost on the cheaper model at the same instants. Caveat: where models get
-- different work (the big model the hard items), success rates are not like for like.
WITH params AS (
    SELECT 0.05 AS success_tolerance
),
attempts AS (
    SELECT s.workflow,
           s.work_item_id,
           s.attempt,
           max(CASE WHEN s.kind = 'llm' THEN s.model END) AS model,
           sum(s.spend_usd)                               AS spend_usd
    FROM priced_spans s
    GROUP BY s.workflow, s.work_item_id, s.trace_id, s.attempt
),
by_model AS (
    SELECT a.workflow,
           a.model,
           count(*)                                                             AS attempts,
           avg(CASE WHEN o.resolved_attempt = a.attempt THEN 1.0 ELSE 0.0 END) AS success_rate,
           sum(a.spend_usd)                                                     AS spend_usd,
           sum(a.spend_usd) / count(*)                                          AS cost_per_attempt_usd
    FROM attempts a
    JOIN outcomes o ON a.work_item_id = o.work_item_id
    WHERE a.model IS NOT NULL
    GROUP BY a.workflow, a.model
),
cheapest_alternative AS (
    SELECT workflow, model, cheaper_model, cheaper_success_rate, cheaper_cost_per_attempt_usd
    FROM (
        SELECT e.workflow,
               e.model,
               c.model                AS cheaper_model,
               c.success_rate         AS cheaper_success_rate,
               c.cost_per_attempt_usd AS cheaper_cost_per_attempt_usd,
               row_number() OVER (PARTITION BY e.workflow, e.model ORDER BY c.cost_per_attempt_usd, c.model) AS pick
        FROM by_model e
        -- c.model <> e.model: by_model is evaluated once per reference, and float sums in another
        -- order can make a model look cheaper than itself in the last digit.
        JOIN by_model c ON c.workflow = e.workflow AND c.model <> e.model
                       AND c.cost_per_attempt_usd < e.cost_per_attempt_usd
        CROSS JOIN params p
        WHERE c.success_rate >= e.success_rate - p.success_tolerance
    ) ranked
    WHERE pick = 1
),
what_if AS (
    SELECT s.workflow,
           s.model,
           sum(s.spend_usd) AS llm_spend_usd,
           sum(token_cost(k.cheaper_model, s.input_tokens, s.cached_input_tokens, s.output_tokens,
                          s.reasoning_tokens, s.start_time)) AS what_if_spend_usd
    FROM priced_spans s
    JOIN cheapest_alternative k ON s.workflow = k.workflow AND s.model = k.model
    WHERE s.kind = 'llm'
    GROUP BY s.workflow, s.model
)
SELECT b.workflow,
       b.model,
       b.attempts,
       b.success_rate,
       b.cost_per_attempt_usd,
       b.spend_usd,
       k.cheaper_model,
       k.cheaper_success_rate,
       k.cheaper_cost_per_attempt_usd,
       w.llm_spend_usd,
       w.what_if_spend_usd,
       w.llm_spend_usd - w.what_if_spend_usd AS saving_usd
FROM by_model b
LEFT JOIN cheapest_alternative k ON b.workflow = k.workflow AND b.model = k.model
LEFT JOIN what_if w ON b.workflow = w.workflow AND b.model = w.model
