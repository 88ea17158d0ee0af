-- One decision per workflow (outsource to BPO, keep human, route to cheaper model, invest more compute, or cap spend) with the numbers that led to it.
--
-- Settings (report_settings; a report_settings.csv in the data location overrides the defaults):
--   route_min_saving_share       route when a cheaper model would save at least this share of AI
--                                spend (default 0.10)
--   invest_min_value_per_dollar  invest when an extra dollar of inference has gone with at least this
--                                much extra value (marginal_utility's value_per_extra_dollar; default 1)
-- The rules, first match wins:
--   1. AI cost per resolved unit (human corrections included) above the cheaper of the BPO price and
--      in-house cost: 'outsource to BPO' if the BPO is the cheaper of the two, else 'keep human'.
--   2. routing saving share >= route_min_saving_share: 'route to cheaper model'.
--   3. value per extra dollar >= invest_min_value_per_dollar: 'invest more compute'.
--   4. otherwise 'cap spend': more compute has not bought more value.
WITH params AS (
    SELECT max(CASE WHEN name = 'route_min_saving_share' THEN value END)      AS route_min_saving_share,
           max(CASE WHEN name = 'invest_min_value_per_dollar' THEN value END) AS invest_min_value_per_dollar
    FROM report_settings
),
facts AS (
    SELECT c.workflow,
           c.cost_per_resolved_usd,
           c.first_try_rate,
           c.retry_share,
           c.spend_usd,
           b.bpo_unit_price_usd,
           b.human_unit_cost_usd,
           coalesce(r.saving_usd, 0.0) / nullif(c.spend_usd, 0) AS routing_saving_share,
           m.value_per_extra_dollar
    FROM cost_per_outcome c
    LEFT JOIN bpo_comparison b ON c.workflow = b.workflow
    LEFT JOIN (SELECT workflow, sum(saving_usd) AS saving_usd FROM routing_candidates GROUP BY workflow) r
           ON c.workflow = r.workflow
    LEFT JOIN (SELECT workflow, value_per_extra_dollar FROM marginal_utility WHERE model IS NULL) m
           ON c.workflow = m.workflow
    WHERE c.all_tenants
)
SELECT f.workflow,
       CASE
           WHEN f.cost_per_resolved_usd > least(coalesce(f.bpo_unit_price_usd, 'Infinity'), coalesce(f.human_unit_cost_usd, 'Infinity'))
                OR f.cost_per_resolved_usd IS NULL AND coalesce(f.bpo_unit_price_usd, f.human_unit_cost_usd) IS NOT NULL
               THEN CASE WHEN coalesce(f.bpo_unit_price_usd, 'Infinity') <= coalesce(f.human_unit_cost_usd, 'Infinity')
                         THEN 'outsource to BPO' ELSE 'keep human' END
           WHEN f.routing_saving_share >= p.route_min_saving_share THEN 'route to cheaper model'
           WHEN f.value_per_extra_dollar >= p.invest_min_value_per_dollar THEN 'invest more compute'
           ELSE 'cap spend'
       END AS decision,
       f.cost_per_resolved_usd,
       f.bpo_unit_price_usd,
       f.human_unit_cost_usd,
       f.first_try_rate,
       f.retry_share,
       f.routing_saving_share,
       f.value_per_extra_dollar,
       f.spend_usd
FROM facts f
CROSS JOIN params p
