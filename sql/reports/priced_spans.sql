-- Building block: every span with its cost in USD, the reported cost_usd or else priced from model_prices as of the span's start.
--
-- Calls are priced as the provider bills them: cache writes, service tier and long-context rates
-- included (token_cost's full form).
-- spend_usd is NULL only for spans that have no cost at all (no model or no price for it, or none
-- at its service tier): sums skip them, and work_item_costs counts the LLM calls among them so no report hides them.
SELECT *,
       coalesce(cost_usd,
                token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens,
                           cache_write_1h_input_tokens, output_tokens, reasoning_tokens,
                           service_tier, start_time)) AS spend_usd
FROM spans
