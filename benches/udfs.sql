-- The token-economics functions against the same arithmetic written inline, on 10 M in-memory
-- rows and one core (target_partitions = 1), so the figures measure the functions, not Parquet.
SET datafusion.execution.target_partitions = 1;
CREATE TABLE t AS
SELECT value % 1000 AS g,
       (value % 977) * 0.001 + 0.01 AS cost,
       (value % 89) / 100.0 + 0.1 AS p,
       (value % 1013) * 0.01 AS value,
       CASE value % 3 WHEN 0 THEN 'gpt-4.1-mini' WHEN 1 THEN 'claude-sonnet-4-5' ELSE 'claude-opus-4-1' END AS model,
       1000 + value % 20000 AS input_tokens,
       value % 500 AS cached_input_tokens,
       100 + value % 900 AS output_tokens,
       value % 50 AS reasoning_tokens,
       to_timestamp_seconds(1767225600 + value % 8000000) AS at
FROM range(10000000);

-- bench: inline_division
SELECT sum(cost / p) FROM t;
-- bench: effective_cost
-- vs: inline_division
SELECT sum(effective_cost(cost, p)) FROM t;
-- bench: inline_square
SELECT sum((cost / p) * (cost / p)) FROM t;
-- bench: attention_cost_ratio
-- vs: inline_square
SELECT sum(attention_cost_ratio(cost, p)) FROM t;
-- bench: break_even_rate
-- vs: inline_division
SELECT sum(break_even_rate(cost, p)) FROM t;
-- bench: token_cost
-- rows: 10000000
SELECT sum(token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, at)) FROM t;
-- bench: sum_grouped
SELECT count(*) FROM (SELECT g, sum(cost) FROM t GROUP BY g);
-- bench: cost_per_outcome_grouped
-- vs: sum_grouped
SELECT count(*) FROM (SELECT g, cost_per_outcome(cost, p > 0.5) FROM t GROUP BY g);
-- bench: regr_slope_grouped
SELECT count(*) FROM (SELECT g, regr_slope(value, cost) FROM t GROUP BY g);
-- bench: marginal_utility_grouped
-- vs: regr_slope_grouped
SELECT count(*) FROM (SELECT g, marginal_token_utility(value, cost) FROM t GROUP BY g);
-- bench: regr_slope_whole
SELECT regr_slope(value, cost) FROM t;
-- bench: marginal_utility_whole
-- vs: regr_slope_whole
SELECT marginal_token_utility(value, cost) FROM t;
