-- Cache and tier savings per workflow and model: how often calls read the cache, what cache reads saved, what cache writes cost extra, the net, and what batch rates would save.
--
-- LLM calls only, every call counted (calls that never touch the cache are in the denominators).
-- Savings are at list prices: token_cost as billed, against the same call with its cache reads
-- (or writes) billed as plain input at the same tier and size.
--   llm_calls                  LLM calls
--   calls_reading_cache        calls with cache reads; cache_hit_rate = calls_reading_cache / llm_calls
--   cached_input_share         cached input tokens / all input tokens
--   cache_read_tokens, cache_write_tokens
--   cache_read_saving_usd      what cache reads saved
--   cache_write_extra_usd      what cache writes cost above plain input (1-hour writes included)
--   net_cache_saving_usd       read saving - write extra: negative where caching costs more than
--                              it saves; caching_pays false there (writes never read, for one)
--   batch_spend_usd            spend of calls that ran at batch rates
--   standard_spend_usd         spend of calls at the standard tier (NULL tier: standard)
--   batch_saving_usd           what the standard-tier calls would save at the model's batch rates,
--                              were their work latency-tolerant (batch jobs answer within a day)
--   calls_without_batch_price  standard-tier calls whose model has no batch price (not in the saving)
--   unpriced_calls             calls with no price at all, e.g. none at their tier (never billed
--                              at another tier's rate)
WITH calls AS (
    SELECT workflow,
           model,
           coalesce(nullif(service_tier, ''), 'standard') AS tier,
           spend_usd,
           coalesce(input_tokens, 0)                      AS input_all,
           coalesce(cached_input_tokens, 0)               AS cached,
           coalesce(cache_write_input_tokens, 0)          AS written,
           token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens,
                      cache_write_1h_input_tokens, output_tokens, reasoning_tokens,
                      service_tier, start_time)           AS billed,
           token_cost(model, input_tokens, 0, cache_write_input_tokens,
                      cache_write_1h_input_tokens, output_tokens, reasoning_tokens,
                      service_tier, start_time)           AS reads_as_input,
           token_cost(model, input_tokens, cached_input_tokens, 0, 0, output_tokens,
                      reasoning_tokens, service_tier, start_time) AS writes_as_input,
           token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens,
                      cache_write_1h_input_tokens, output_tokens, reasoning_tokens,
                      'batch', start_time)                AS at_batch
    FROM priced_spans
    WHERE kind = 'llm'
),
totals AS (
    SELECT workflow,
           model,
           count(*)                                                       AS llm_calls,
           sum(CASE WHEN cached > 0 THEN 1 ELSE 0 END)                    AS calls_reading_cache,
           sum(cached)                                                    AS cache_read_tokens,
           sum(written)                                                   AS cache_write_tokens,
           sum(input_all)                                                 AS input_tokens,
           coalesce(sum(reads_as_input - billed), 0.0)                    AS cache_read_saving_usd,
           coalesce(sum(billed - writes_as_input), 0.0)                   AS cache_write_extra_usd,
           sum(CASE WHEN tier = 'batch' THEN spend_usd END)               AS batch_spend_usd,
           sum(CASE WHEN tier = 'standard' THEN spend_usd END)            AS standard_spend_usd,
           sum(CASE WHEN tier = 'standard' THEN billed - at_batch END)    AS batch_saving_usd,
           sum(CASE WHEN tier = 'standard' AND billed IS NOT NULL AND at_batch IS NULL
                    THEN 1 ELSE 0 END)                                    AS calls_without_batch_price,
           sum(CASE WHEN billed IS NULL THEN 1 ELSE 0 END)                AS unpriced_calls
    FROM calls
    GROUP BY workflow, model
)
SELECT workflow,
       model,
       llm_calls,
       calls_reading_cache,
       CAST(calls_reading_cache AS DOUBLE) / llm_calls                    AS cache_hit_rate,
       CAST(cache_read_tokens AS DOUBLE) / nullif(input_tokens, 0)        AS cached_input_share,
       cache_read_tokens,
       cache_write_tokens,
       cache_read_saving_usd,
       cache_write_extra_usd,
       cache_read_saving_usd - cache_write_extra_usd                      AS net_cache_saving_usd,
       CASE WHEN cache_read_tokens > 0 OR cache_write_tokens > 0
            THEN cache_read_saving_usd - cache_write_extra_usd > 0 END    AS caching_pays,
       coalesce(batch_spend_usd, 0.0)                                     AS batch_spend_usd,
       coalesce(standard_spend_usd, 0.0)                                  AS standard_spend_usd,
       batch_saving_usd,
       calls_without_batch_price,
       unpriced_calls
FROM totals
