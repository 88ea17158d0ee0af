"""The eight reports in tokenledger beside DuckDB running the same questions in plain SQL.

Usage: benches/reports.sh [WORK_ITEMS]   (release build; default 900,000 items ≈ 10 M spans)

DuckDB has no tokenledger functions, so its versions replace them with plain SQL: token_cost
with an ASOF join on model_prices, effective_cost / break_even_rate / attention_cost_ratio with
their arithmetic, marginal_token_utility with regr_slope, percentile_cont with quantile_cont.
Everything else is the report file as written. Both engines read the same Parquet files; each
report runs once to warm up, then tokenledger and DuckDB alternate, report by report, five
times; medians are compared. The results of the two engines are compared too (row counts, and
every number to 1e-6 relative), an independent check of the reports at scale.
"""

import datetime
import math
import os
import re
import statistics
import subprocess
import sys
import time

import duckdb

REPORTS = ["cost_per_outcome", "retry_tail", "context_growth", "routing_candidates",
           "bpo_comparison", "marginal_utility", "waste", "allocation"]
VIEWS = ["priced_spans", "work_item_costs"] + REPORTS
RUNS = int(os.environ.get("REPORT_RUNS", "5"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def struct_pack(sql):
    """DataFusion's named_struct('a', x, 'b', y) as DuckDB's struct_pack(a := x, b := y)."""
    while "named_struct(" in sql:
        start = sql.index("named_struct(") + len("named_struct(")
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
        pairs = ", ".join(f"{args[i].strip(chr(39))} := {args[i + 1]}" for i in range(0, len(args), 2))
        sql = sql[:start - len("named_struct(")] + f"struct_pack({pairs})" + sql[end:]
    return sql


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
    sql = sql.replace(
        "effective_cost(sum(attempt_1_spend_usd) / count(*),\n                      avg(CASE WHEN resolved_attempt = 1 THEN 1.0 ELSE 0.0 END))",
        "(sum(attempt_1_spend_usd) / count(*)) / nullif(avg(CASE WHEN resolved_attempt = 1 THEN 1.0 ELSE 0.0 END), 0)")
    sql = sql.replace("attention_cost_ratio(c.input_tokens, m.median_input_tokens)",
                      "power(c.input_tokens / m.median_input_tokens, 2)")
    sql = sql.replace("break_even_rate(ai.spend_usd / nullif(ai.attempts, 0), b.bpo_unit_price_usd)",
                      "(ai.spend_usd / nullif(ai.attempts, 0)) / nullif(b.bpo_unit_price_usd, 0)")
    if name == "routing_candidates":
        sql = re.sub(r"what_if AS \(.*?\)\nSELECT k\.workflow,", WHAT_IF, sql, flags=re.S)
        sql = struct_pack(sql)
    for fn in ["token_cost(", "effective_cost(", "attention_cost_ratio(", "break_even_rate("]:
        assert fn not in sql, f"{name}: {fn} left in the DuckDB version"
    return sql


def main():
    binary, data = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    for table in ["spans", "outcomes", "model_prices", "baselines"]:
        con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}/{table}/**/*.parquet')")
    for view in VIEWS:
        con.sql(f"CREATE VIEW {view} AS {duckdb_sql(view)}")
    spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]

    # Interleave: one tokenledger pass over all reports, then DuckDB over all reports, alternating.
    ours = {r: [] for r in REPORTS}
    theirs = {r: [] for r in REPORTS}
    duck_results = {}
    for run in range(RUNS + 1):
        per, _ = tokenledger_times_single(binary, data)
        for r in REPORTS:
            if run:
                ours[r].append(per[r])
            started = time.perf_counter()
            rows = con.sql(f"SELECT * FROM {r} ORDER BY 1, 2 NULLS FIRST").fetchall()
            elapsed = (time.perf_counter() - started) * 1e3
            if run:
                theirs[r].append(elapsed)
            print(f"run {run} {r}: tokenledger {per[r]:.0f} ms, DuckDB {elapsed:.0f} ms", file=sys.stderr, flush=True)
            duck_results[r] = rows
    mismatches = compare(binary, data, duck_results)

    med = statistics.median
    lines = [
        f"# Reports vs DuckDB, {datetime.date.today()}",
        "",
        f"{spans:,} spans (`tokenledger gen --seed 42`); release build; DuckDB {duckdb.__version__}; "
        f"{os.cpu_count()} cores; median of {RUNS} alternating runs after a warm-up. tokenledger's time is "
        "the statement time reported by `--timing` (one process per pass, session already open).",
        "",
        "| report | tokenledger | DuckDB | ratio |",
        "|---|---|---|---|",
    ]
    ratios = []
    for r in REPORTS:
        a, b = med(ours[r]), med(theirs[r])
        ratios.append(a / b)
        lines.append(f"| {r} | {a:.0f} ms | {b:.0f} ms | {a / b:.2f}× |")
    geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    lines += ["", f"Geometric mean ratio: **{geo:.2f}×** (below 1: tokenledger faster).", "",
              "Results compared between the engines: " + ("identical to 1e-6 relative on every report."
                                                            if not mismatches else "; ".join(mismatches)), ""]
    report = "\n".join(lines)
    print(report)
    name = os.environ.get("REPORT_RESULTS", f"{datetime.date.today()}-reports")
    path = os.path.join(ROOT, "benches", "results", f"{name}.md")
    with open(path, "w") as f:
        f.write(report)


def tokenledger_times_single(binary, data):
    """One pass over all reports in one process, each report once; returns {report: ms}."""
    script = "".join(f"SELECT * FROM {r} ORDER BY 1, 2 NULLS FIRST;\n" for r in REPORTS)
    out = subprocess.run([binary, "query", "--data", data, "--format", "csv", "--timing"],
                         input=script, capture_output=True, text=True, check=True)
    times = [float(t) for t in re.findall(r"rows in ([0-9.]+) ms", out.stderr)]
    return dict(zip(REPORTS, times)), out.stdout


def compare(binary, data, duck_results):
    """Compares each report's rows between the engines; returns descriptions of differences."""
    problems = []
    for r in REPORTS:
        out = subprocess.run([binary, "query", "--data", data, "--format", "csv",
                              f"SELECT * FROM {r} ORDER BY 1, 2 NULLS FIRST"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[1:]
        ours = [line.split(",") for line in out]
        theirs = duck_results[r]
        if len(ours) != len(theirs):
            problems.append(f"{r}: {len(ours)} rows vs {len(theirs)}")
            continue
        for a_row, b_row in zip(ours, theirs):
            for a, b in zip(a_row, b_row):
                if not same(a, b):
                    problems.append(f"{r}: {a!r} vs {b!r} in {a_row[:2]}")
                    break
    return problems


def same(ours, theirs):
    # DuckDB's regr_slope gives NaN where marginal_token_utility gives NULL (fewer than two points).
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return ours == ""
    if isinstance(theirs, (int, float)):
        try:
            a = float(ours)
        except ValueError:
            return False
        return math.isclose(a, float(theirs), rel_tol=1e-6, abs_tol=1e-9)
    return ours == str(theirs)


if __name__ == "__main__":
    main()
