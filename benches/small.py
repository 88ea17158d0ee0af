"""Small interactive queries as a BI tool sends them, over Flight SQL with ADBC against a warm
`tokenledger serve`, beside DuckDB in-process on the same files (issue #19's target: <= 1.0x).

usage: small.py TOKENLEDGER RUNS LABEL=DATA_DIR [LABEL=DATA_DIR ...]

Each round runs every query once on each side, interleaved; round 0 warms up. Medians of RUNS
rounds. Every answer is compared with DuckDB's, value by value. Prints a Markdown table."""

import os
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb

from harness import Server, same

SMALL = {
    "filter_aggregate": "SELECT count(*) AS calls, sum(cost_usd) AS cost FROM spans "
                        "WHERE workflow = 'invoice' AND model = 'gpt-4.1-mini'",
    "group_two_text": "SELECT workflow, model, count(*) AS spans, sum(input_tokens) AS tokens FROM spans "
                      "GROUP BY workflow, model ORDER BY workflow, model NULLS FIRST",
    "top_k": "SELECT trace_id, span_id, input_tokens FROM spans "
             "ORDER BY input_tokens DESC NULLS LAST, span_id LIMIT 10",
}


def timed(run, sql):
    started = time.perf_counter()
    table = run(sql)
    return (time.perf_counter() - started) * 1e3, table


def measure(binary, label, data, runs):
    duck = duckdb.connect()
    duck.sql(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{data}/spans/**/*.parquet')")
    spans = duck.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    times = {q: {"Flight (ADBC)": [], "DuckDB": []} for q in SMALL}
    with Server(binary, data) as server, flight_sql.connect(server.uri) as conn:
        cursor = conn.cursor()

        def adbc(sql):
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

        for round_ in range(runs + 1):
            for name, sql in SMALL.items():
                ours_ms, ours = timed(adbc, sql)
                theirs_ms, theirs = timed(lambda q: duck.sql(q).to_arrow_table(), sql)
                a, b = ours.to_pylist(), theirs.to_pylist()
                assert len(a) == len(b) and all(
                    same(x, y) for ra, rb in zip(a, b) for x, y in zip(ra.values(), rb.values())
                ), f"{name}: answers differ"
                if round_:
                    times[name]["Flight (ADBC)"].append(ours_ms)
                    times[name]["DuckDB"].append(theirs_ms)
    lines = [f"### {label}: {spans:,} spans", "", "| query | Flight (ADBC) ms | DuckDB in-process ms | ratio |", "|---|---:|---:|---:|"]
    for name, per in times.items():
        ours, theirs = statistics.median(per["Flight (ADBC)"]), statistics.median(per["DuckDB"])
        lines.append(f"| {name} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")
    return "\n".join(lines + [""])


def main():
    binary, runs = sys.argv[1], int(sys.argv[2])
    for arg in sys.argv[3:]:
        label, data = arg.split("=", 1)
        print(measure(binary, label, os.path.abspath(data), runs), flush=True)


main()
