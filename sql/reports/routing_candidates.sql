-- Routing candidates: per workflow and model, success rate and cost per attempt, and what moving that model's calls to a cheaper model that succeeds about as often would save.
--
-- Setting (report_settings, default 0.05): success_tolerance, how much lower a cheaper model's
-- success rate may be (0.05 = five percentage points) for it to count as doing the job as well.
-- Attempts, their models and whether they succeeded come from the attempt_costs building block. The
-- what-if reprices the expensive model's LLM calls with token_cost on the cheaper model at the
-- same instants. Caveat: where models get
-- different work (the big model the hard items), success rates are not like for like.
WITH params AS (
    SELECT max(CASE WHEN name = 'success_tolerance' THEN value END) AS success_tolerance
    FROM report_settings
),
by_model AS (
    SELECT a.workflow,
           a.model,
           count(*)                                                             AS attempts,
           avg(CASE WHEN a.succeeded THEN 1.0 ELSE 0.0 END)                    AS success_rate,
           sum(a.spend_usd)                                                     AS spend_usd,
           sum(a.spend_usd) / count(*)                                          AS cost_per_attempt_usd
    FROM attempt_costs a
    WHERE a.model IS NOT NULL
    GROUP BY a.workflow, a.model
),
-- Every model of a workflow beside every other, from a single evaluation of by_model: DataFusion
-- evaluates a CTE once per reference, so a self-join of by_model would repeat its pass over every
-- span (five passes in all before this, once what_if and the final join were counted).
model_sets AS (
    SELECT workflow,
           array_agg(named_struct('model', model, 'attempts', attempts, 'success_rate', success_rate,
                                  'spend_usd', spend_usd, 'cost_per_attempt_usd', cost_per_attempt_usd)) AS models
    FROM by_model
    GROUP BY workflow
),
each_model AS (
    SELECT workflow, unnest(models) AS e, models FROM model_sets
),
pairs AS (
    SELECT workflow, e, unnest(models) AS c FROM each_model
),
-- For each model, the cheapest other model that succeeds about as often (none: NULLs). The
-- alternative's fields are picked one by one: a field read from a NULL struct is not NULL.
choices AS (
    SELECT workflow,
           e,
           CASE WHEN eligible THEN c['model'] END                AS cheaper_model,
           CASE WHEN eligible THEN c['success_rate'] END         AS cheaper_success_rate,
           CASE WHEN eligible THEN c['cost_per_attempt_usd'] END AS cheaper_cost_per_attempt_usd
    FROM (
        SELECT pairs.workflow,
               pairs.e,
               pairs.c,
               eligible,
               row_number() OVER (PARTITION BY pairs.workflow, pairs.e['model']
                                  ORDER BY eligible DESC, pairs.c['cost_per_attempt_usd'], pairs.c['model']) AS pick
        FROM (
            SELECT p.workflow, p.e, p.c,
                   p.c['model'] <> p.e['model']
                   AND p.c['cost_per_attempt_usd'] < p.e['cost_per_attempt_usd']
                   AND p.c['success_rate'] >= p.e['success_rate'] - t.success_tolerance AS eligible
            FROM pairs p
            CROSS JOIN params t
        ) pairs
    ) ranked
    WHERE pick = 1
),
what_if AS (
    SELECT s.workflow,
           s.model,
           sum(s.spend_usd) AS llm_spend_usd,
           sum(token_cost(k.cheaper_model, s.input_tokens, s.cached_input_tokens,
                          s.cache_write_input_tokens, s.cache_write_1h_input_tokens,
                          s.output_tokens, s.reasoning_tokens, s.service_tier,
                          s.start_time)) AS what_if_spend_usd
    FROM priced_spans s
    JOIN choices k ON s.workflow = k.workflow AND s.model = k.e['model']
    WHERE s.kind = 'llm' AND k.cheaper_model IS NOT NULL
    GROUP BY s.workflow, s.model
)
SELECT k.workflow,
       k.e['model']                AS model,
       k.e['attempts']             AS attempts,
       k.e['success_rate']         AS success_rate,
       k.e['cost_per_attempt_usd'] AS cost_per_attempt_usd,
       k.e['spend_usd']            AS spend_usd,
       k.cheaper_model,
       k.cheaper_success_rate,
       k.cheaper_cost_per_attempt_usd,
       w.llm_spend_usd,
       w.what_if_spend_usd,
       w.llm_spend_usd - w.what_if_spend_usd AS saving_usd
FROM choices k
LEFT JOIN what_if w ON k.workflow = w.workflow AND k.e['model'] = w.model
