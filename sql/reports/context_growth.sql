-- Context growth per workflow: prompt size per LLM call, its growth turn by turn, what long contexts cost, and retrieval over-fetch.
--
-- Setting (report_settings, default 8000): reference_context_tokens, the prompt size above which a
-- call counts as long.
--   p50/p90_input_tokens       prompt tokens per LLM call
--   avg_growth_per_turn        average increase of the prompt from one LLM call to the next within an attempt
--   avg_attention_vs_median    mean attention_cost_ratio(prompt, workflow median prompt): attention compute
--                              relative to a median-sized call (quadratic in context length)
--   spend_above_reference_usd  spend on calls whose prompt exceeds reference_context_tokens
--   overfetch_share            share of retrieved documents the answer did not use
WITH params AS (
    SELECT CAST(max(CASE WHEN name = 'reference_context_tokens' THEN value END) AS BIGINT) AS reference_context_tokens
    FROM report_settings
),
calls AS (
    SELECT workflow, input_tokens, spend_usd
    FROM priced_spans
    WHERE kind = 'llm' AND input_tokens IS NOT NULL
),
medians AS (
    SELECT workflow, median(input_tokens) AS median_input_tokens FROM calls GROUP BY workflow
),
-- Growth per turn without a window function: within a trace the turn-to-turn increases add up to
-- the last prompt minus the first, so their mean over all turns is sum(last - first) / sum(turns).
-- One hash aggregate per trace, instead of sorting every call by trace (most of the time before).
traces AS (
    SELECT workflow,
           last_value(input_tokens ORDER BY start_time) - first_value(input_tokens ORDER BY start_time)
                        AS growth_tokens,
           count(*) - 1 AS turns
    FROM spans
    WHERE kind = 'llm' AND input_tokens IS NOT NULL
    GROUP BY workflow, trace_id
),
growth AS (
    SELECT workflow, sum(growth_tokens) / CAST(nullif(sum(turns), 0) AS DOUBLE) AS avg_growth_per_turn
    FROM traces
    GROUP BY workflow
),
retrieval AS (
    SELECT workflow, sum(docs_retrieved) AS docs_retrieved, sum(docs_used) AS docs_used
    FROM spans WHERE kind = 'retrieval' GROUP BY workflow
),
-- Per-call figures first; the per-workflow ones (growth, retrieval) are joined to those four rows,
-- not to every call.
per_workflow AS (
    SELECT c.workflow,
           count(*)                                                         AS llm_calls,
           percentile_cont(c.input_tokens, 0.5)                             AS p50_input_tokens,
           percentile_cont(c.input_tokens, 0.9)                             AS p90_input_tokens,
           avg(attention_cost_ratio(c.input_tokens, m.median_input_tokens)) AS avg_attention_vs_median,
           sum(CASE WHEN c.input_tokens > p.reference_context_tokens THEN c.spend_usd ELSE 0 END)
                                                                            AS spend_above_reference_usd
    FROM calls c
    JOIN medians m ON c.workflow = m.workflow
    CROSS JOIN params p
    GROUP BY c.workflow
)
SELECT w.workflow,
       w.llm_calls,
       w.p50_input_tokens,
       w.p90_input_tokens,
       g.avg_growth_per_turn,
       w.avg_attention_vs_median,
       p.reference_context_tokens,
       w.spend_above_reference_usd,
       r.docs_retrieved,
       r.docs_used,
       1.0 - r.docs_used / CAST(nullif(r.docs_retrieved, 0) AS DOUBLE) AS overfetch_share
FROM per_workflow w
CROSS JOIN params p
LEFT JOIN retrieval r ON w.workflow = r.workflow
LEFT JOIN growth g ON w.workflow = g.workflow
