-- AI spend as FinOps FOCUS 1.0 cost and usage rows: one per day, provider, model (SKU), tenant (sub account), service tier, token type and pricing method.
--
-- Parameters: $1 the first instant of the export (inclusive), $2 its end (exclusive), UTC.
-- Each call's tokens are split by type as token_cost prices them: input (neither read from nor
-- written to cache), cached input, cache write (5-minute), cache write 1h, output (without
-- reasoning) and reasoning; a costed call without tokens is one 'request'.
--   ListCost / ListUnitPrice  the type's tokens at the rate token_cost bills them (token_price: the
--                             model's price at the call's service tier and input size, as of the
--                             call), per million tokens
--   BilledCost, EffectiveCost the reported cost_usd, split over the call's token types in
--                             proportion to their list cost (by token count when the model has
--                             no price); calls without cost_usd are priced with token_cost
--   x_ServiceTier             the tier the calls ran at (standard when not reported)
--   x_PricedBy                'reported' (cost_usd), 'token_cost' (no cost reported: priced by
--                             tokenledger) or 'unpriced' (neither: tokens with cost 0)
--   x_WorkItems, x_ResolvedOutcomes, x_CostPerOutcome
--                             the work items whose calls are in the row, those resolved, and the
--                             row's cost per resolved one (an item counts in every row it spent in)
WITH calls AS (
    SELECT s.start_time,
           coalesce(s.provider, 'unknown')                                AS provider,
           s.model,
           s.tenant,
           s.work_item_id,
           s.cost_usd,
           coalesce(nullif(s.service_tier, ''), 'standard')               AS service_tier,
           input_all,
           input_all - cached - written                                   AS input_q,
           cached                                                         AS cached_q,
           written - written_1h                                           AS write_q,
           written_1h                                                     AS write_1h_q,
           output_all - reasoning                                         AS output_q,
           reasoning                                                      AS reasoning_q,
           input_all + output_all                                         AS tokens_q,
           token_cost(s.model, input_all, cached, written, written_1h, output_all, reasoning,
                      s.service_tier, s.start_time)                       AS list_total
    FROM (
        SELECT *,
               least(greatest(coalesce(cache_write_1h_input_tokens, 0), 0), written) AS written_1h
        FROM (
            SELECT *,
                   least(greatest(coalesce(cache_write_input_tokens, 0), 0), input_all - cached) AS written
            FROM (
                SELECT *,
                       least(greatest(coalesce(cached_input_tokens, 0), 0), input_all) AS cached,
                       least(greatest(coalesce(reasoning_tokens, 0), 0), output_all)   AS reasoning
                FROM (SELECT *,
                             greatest(coalesce(input_tokens, 0), 0)  AS input_all,
                             greatest(coalesce(output_tokens, 0), 0) AS output_all
                      FROM spans
                      WHERE start_time >= $1 AND start_time < $2) counted
            ) with_reads
        ) with_writes
    ) s
    WHERE s.cost_usd IS NOT NULL
       OR s.model IS NOT NULL AND (s.input_all > 0 OR s.output_all > 0)
),
charges AS (
    SELECT c.*,
           t.token_type,
           CASE t.token_type
               WHEN 'input' THEN c.input_q
               WHEN 'cached input' THEN c.cached_q
               WHEN 'cache write' THEN c.write_q
               WHEN 'cache write 1h' THEN c.write_1h_q
               WHEN 'output' THEN c.output_q
               WHEN 'reasoning' THEN c.reasoning_q
               WHEN 'request' THEN CASE WHEN c.tokens_q = 0 THEN 1 END
           END AS quantity
    FROM calls c
    CROSS JOIN (VALUES ('input'), ('cached input'), ('cache write'), ('cache write 1h'), ('output'),
                       ('reasoning'), ('request')) AS t(token_type)
),
listed AS (
    -- The type's tokens at the rate token_cost bills them with (the same price row).
    SELECT ch.*,
           CASE WHEN ch.token_type <> 'request' AND ch.quantity > 0
                THEN ch.quantity * token_price(ch.model, ch.token_type, ch.input_all,
                                               ch.service_tier, ch.start_time) / 1e6
           END AS list_cost
    FROM charges ch
    WHERE ch.quantity > 0
),
priced AS (
    SELECT ch.*,
           date_trunc('day', ch.start_time) AS charge_day,
           CASE
               WHEN ch.cost_usd IS NULL THEN coalesce(ch.list_cost, 0.0)
               WHEN ch.list_total > 0 THEN ch.cost_usd * ch.list_cost / ch.list_total
               WHEN ch.tokens_q > 0 THEN ch.cost_usd * ch.quantity / ch.tokens_q
               ELSE ch.cost_usd
           END AS billed,
           CASE
               WHEN ch.cost_usd IS NOT NULL THEN 'reported'
               WHEN ch.list_total IS NOT NULL THEN 'token_cost'
               ELSE 'unpriced'
           END AS priced_by,
           CASE WHEN o.outcome = 'resolved' THEN ch.work_item_id END AS resolved_item
    FROM listed ch
    LEFT JOIN outcomes o ON ch.work_item_id = o.work_item_id
)
SELECT CAST(NULL AS VARCHAR)                                      AS "AvailabilityZone",
       sum(billed)                                                AS "BilledCost",
       provider                                                   AS "BillingAccountId",
       provider                                                   AS "BillingAccountName",
       'USD'                                                      AS "BillingCurrency",
       date_trunc('month', charge_day) + INTERVAL '1 month'       AS "BillingPeriodEnd",
       date_trunc('month', charge_day)                            AS "BillingPeriodStart",
       'Usage'                                                    AS "ChargeCategory",
       -- ChargeCategory's name in FOCUS 1.0-preview: the official validator 1.0.0 still reads it
       -- in its SkuPriceId rule and fails every file without it.
       'Usage'                                                    AS "ChargeType",
       CAST(NULL AS VARCHAR)                                      AS "ChargeClass",
       coalesce(model, provider) || ' ' || token_type
           || CASE WHEN token_type = 'request' THEN 's' ELSE ' tokens' END
           || CASE WHEN service_tier <> 'standard' THEN ' (' || service_tier || ')' ELSE '' END AS "ChargeDescription",
       'Usage-Based'                                              AS "ChargeFrequency",
       charge_day + INTERVAL '1 day'                              AS "ChargePeriodEnd",
       charge_day                                                 AS "ChargePeriodStart",
       CAST(NULL AS VARCHAR)                                      AS "CommitmentDiscountCategory",
       CAST(NULL AS VARCHAR)                                      AS "CommitmentDiscountId",
       CAST(NULL AS VARCHAR)                                      AS "CommitmentDiscountName",
       CAST(NULL AS VARCHAR)                                      AS "CommitmentDiscountStatus",
       CAST(NULL AS VARCHAR)                                      AS "CommitmentDiscountType",
       CAST(sum(quantity) AS DOUBLE)                              AS "ConsumedQuantity",
       CASE WHEN token_type = 'request' THEN 'Requests' ELSE 'Tokens' END AS "ConsumedUnit",
       sum(coalesce(list_cost, billed))                           AS "ContractedCost",
       sum(list_cost) / (sum(quantity) / 1e6)                     AS "ContractedUnitPrice",
       sum(billed)                                                AS "EffectiveCost",
       provider                                                   AS "InvoiceIssuer",
       provider                                                   AS "InvoiceIssuerName",
       sum(coalesce(list_cost, billed))                           AS "ListCost",
       sum(list_cost) / (sum(quantity) / 1e6)                     AS "ListUnitPrice",
       'Standard'                                                 AS "PricingCategory",
       CASE WHEN token_type <> 'request' THEN sum(quantity) / 1e6 END AS "PricingQuantity",
       CASE WHEN token_type <> 'request' THEN '1M Tokens' END     AS "PricingUnit",
       -- Provider, Publisher and InvoiceIssuer are the names the validator 1.0.0 checks (1.0-preview's);
       -- ProviderName, PublisherName and InvoiceIssuerName are FOCUS 1.0's.
       provider                                                   AS "Provider",
       provider                                                   AS "ProviderName",
       provider                                                   AS "Publisher",
       provider                                                   AS "PublisherName",
       CAST(NULL AS VARCHAR)                                      AS "RegionId",
       CAST(NULL AS VARCHAR)                                      AS "RegionName",
       CAST(NULL AS VARCHAR)                                      AS "ResourceID",
       CAST(NULL AS VARCHAR)                                      AS "ResourceName",
       CAST(NULL AS VARCHAR)                                      AS "ResourceType",
       'AI and Machine Learning'                                  AS "ServiceCategory",
       provider                                                   AS "ServiceName",
       model                                                      AS "SkuId",
       model || ':' || token_type
           || CASE WHEN service_tier <> 'standard' THEN ':' || service_tier ELSE '' END AS "SkuPriceId",
       tenant                                                     AS "SubAccountId",
       tenant                                                     AS "SubAccountName",
       '{"tokenledger/token_type": "' || token_type || '", "tokenledger/service_tier": "' || service_tier
           || '", "tokenledger/priced_by": "' || priced_by || '"}'  AS "Tags",
       token_type                                                 AS "x_TokenType",
       service_tier                                               AS "x_ServiceTier",
       priced_by                                                  AS "x_PricedBy",
       count(DISTINCT work_item_id)                               AS "x_WorkItems",
       count(DISTINCT resolved_item)                              AS "x_ResolvedOutcomes",
       sum(billed) / nullif(count(DISTINCT resolved_item), 0)     AS "x_CostPerOutcome"
FROM priced
GROUP BY charge_day, provider, model, tenant, service_tier, token_type, priced_by
ORDER BY "ChargePeriodStart", "Provider", "SkuId" NULLS FIRST, "SubAccountId" NULLS FIRST, "x_ServiceTier", "x_TokenType", "x_PricedBy"
