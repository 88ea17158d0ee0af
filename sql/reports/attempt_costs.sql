-- Building block: one row per attempt at a work item, with its model, what it spent, and whether it resolved the item.
--
-- An attempt is the spans of one work item with one attempt number in one trace; its model is the
-- model of its LLM calls. Attempts of items without an outcome row (still open) are left out, as
-- in work_item_costs.
--   succeeded            the item's outcome says this attempt resolved it (resolved_attempt)
--   item_resolved        some attempt resolved the item
--   overfetch_spend_usd  retrieval spend × share of retrieved documents left unused
--   unused_docs          documents retrieved and not used
WITH spent AS (
    SELECT workflow,
           work_item_id,
           trace_id,
           attempt,
           max(CASE WHEN kind = 'llm' THEN model END) AS model,
           sum(spend_usd)                             AS spend_usd,
           sum(CASE WHEN kind = 'retrieval'
                    THEN spend_usd * (1.0 - docs_used / CAST(nullif(docs_retrieved, 0) AS DOUBLE)) END)
                                                      AS overfetch_spend_usd,
           sum(CASE WHEN kind = 'retrieval' THEN docs_retrieved - docs_used END) AS unused_docs
    FROM priced_spans
    GROUP BY workflow, work_item_id, trace_id, attempt
)
SELECT a.workflow,
       a.work_item_id,
       a.trace_id,
       a.attempt,
       a.model,
       a.spend_usd,
       a.overfetch_spend_usd,
       a.unused_docs,
       coalesce(o.resolved_attempt = a.attempt, false) AS succeeded,
       o.resolved_attempt IS NOT NULL                  AS item_resolved
FROM spent a
JOIN outcomes o ON a.work_item_id = o.work_item_id
