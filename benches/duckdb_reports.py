"""The reports as DuckDB runs them: the same report files, with tokenledger's functions written out
in plain SQL, so both engines answer the same questions from the same Parquet files.

token_cost becomes an ASOF join on model_prices; effective_cost, break_even_rate and
attention_cost_ratio their arithmetic; marginal_token_utility regr_slope; percentile_cont
quantile_cont; DataFusion's named_struct DuckDB's struct_pack; first_value/last_value (ordered
aggregates) first/last.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = ["cost_per_outcome", "retry_tail", "context_growth", "routing_candidates",
           "bpo_comparison", "marginal_utility", "waste", "allocation"]
# Views the reports read, in dependency order.
VIEWS = ["priced_spans", "work_item_costs", "attempt_costs"] + REPORTS
# report_settings at its defaults (tokenledger's table when the data location has no settings file).
REPORT_SETTINGS = """SELECT * FROM (VALUES ('route_min_saving_share', 0.10), ('invest_min_value_per_dollar', 1.0),
    ('success_tolerance', 0.05), ('reference_context_tokens', 8000.0)) AS t(name, value)"""

PRICE = """((coalesce({s}.input_tokens, 0) - coalesce({s}.cached_input_tokens, 0)) * {p}.input_usd_per_mtok
  + coalesce({s}.cached_input_tokens, 0) * coalesce({p}.cached_input_usd_per_mtok, {p}.input_usd_per_mtok)
  + (coalesce({s}.output_tokens, 0) - coalesce({s}.reasoning_tokens, 0)) * {p}.output_usd_per_mtok
  + coalesce({s}.reasoning_tokens, 0) * coalesce({p}.reasoning_usd_per_mtok, {p}.output_usd_per_mtok)) / 1e6"""

PRICED_SPANS = f"""
SELECT s.*, coalesce(s.cost_usd, CASE WHEN s.input_tokens IS NOT NULL OR s.output_tokens IS NOT NULL
                                     THEN {PRICE.format(s='s', p='p')} END) AS spend_usd
FROM spans s ASOF LEFT JOIN model_prices p ON s.model = p.model AND s.start_time >= p.valid_from
"""

WHAT_IF = f"""what_if AS (
    SELECT s.workflow, s.model, sum(s.spend_usd) AS llm_spend_usd, sum({PRICE.format(s='s', p='p')}) AS what_if_spend_usd
    FROM (SELECT s.*, k.cheaper_model FROM priced_spans s
          JOIN choices k ON s.workflow = k.workflow AND s.model = k.e['model']
          WHERE s.kind = 'llm' AND k.cheaper_model IS NOT NULL) s
    ASOF LEFT JOIN model_prices p ON s.cheaper_model = p.model AND s.start_time >= p.valid_from
    GROUP BY s.workflow, s.model
)
SELECT k.workflow,"""


def rewrite_calls(sql, fn, rewrite):
    """Every call `fn(a, b, ...)` in `sql` replaced by rewrite([a, b, ...]) (nesting respected)."""
    opening = fn + "("
    while opening in sql:
        start = sql.index(opening) + len(opening)
        depth, end, args, arg_start = 1, start, [], start
        while depth:
            ch = sql[end]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            if (ch == "," and depth == 1) or depth == 0:
                args.append(sql[arg_start:end].strip())
                arg_start = end + 1
            end += 1
        sql = sql[:start - len(opening)] + rewrite(args) + sql[end:]
    return sql


def struct_pack(sql):
    """DataFusion's named_struct('a', x, 'b', y) as DuckDB's struct_pack(a := x, b := y)."""
    return rewrite_calls(sql, "named_struct", lambda args: "struct_pack({})".format(
        ", ".join(f"{args[i].strip(chr(39))} := {args[i + 1]}" for i in range(0, len(args), 2))))


def duckdb_sql(name):
    """The report's SQL with tokenledger's functions written out in plain SQL."""
    if name == "priced_spans":
        return PRICED_SPANS
    sql = open(os.path.join(ROOT, "sql", "reports", name + ".sql")).read()
    sql = re.sub(r"(?m)--.*$", "", sql)
    sql = sql.replace("percentile_cont(", "quantile_cont(")
    sql = sql.replace("marginal_token_utility(", "regr_slope(")
    # DuckDB's ordered first/last aggregates are first() and last().
    sql = sql.replace("last_value(", "last(").replace("first_value(", "first(")
    sql = rewrite_calls(sql, "effective_cost", lambda a: f"(({a[0]}) / nullif({a[1]}, 0))")
    sql = rewrite_calls(sql, "cost_per_outcome",
                        lambda a: f"(sum({a[0]}) / nullif(count(*) FILTER (WHERE {a[1]}), 0))")
    sql = sql.replace("attention_cost_ratio(c.input_tokens, m.median_input_tokens)",
                      "power(c.input_tokens / m.median_input_tokens, 2)")
    sql = sql.replace("break_even_rate(ai.spend_usd / nullif(ai.attempts, 0), b.bpo_unit_price_usd)",
                      "(ai.spend_usd / nullif(ai.attempts, 0)) / nullif(b.bpo_unit_price_usd, 0)")
    if name == "routing_candidates":
        sql = re.sub(r"what_if AS \(.*?\)\nSELECT k\.workflow,", WHAT_IF, sql, flags=re.S)
        sql = struct_pack(sql)
    for fn in ["token_cost(", "effective_cost(", "attention_cost_ratio(", "break_even_rate(", "cost_per_outcome("]:
        assert fn not in sql, f"{name}: {fn} left in the DuckDB version"
    return sql


def create_views(con, data):
    """Registers the four tables over DATA's Parquet files and every report view on `con`."""
    con.sql("SET TimeZone = 'UTC'")
    for table in ["spans", "outcomes", "model_prices", "baselines"]:
        con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}/{table}/**/*.parquet')")
    con.sql(f"CREATE VIEW report_settings AS {REPORT_SETTINGS}")
    for view in VIEWS:
        con.sql(f"CREATE VIEW {view} AS {duckdb_sql(view)}")
