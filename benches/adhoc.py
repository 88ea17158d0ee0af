"""Ad-hoc analyst queries in tokenledger (in-process and over Flight SQL) beside DuckDB, on the
same Parquet files.

usage: adhoc.py TOKENLEDGER DATA_DIR [RUNS]   (release build; see benches/adhoc.sh)

Each round runs every query once per path, interleaved: tokenledger in one `query --timing`
process (statement time, session already open), the same SQL through a running `tokenledger serve`
read with pyarrow.flight (GetFlightInfo to last batch), and DuckDB (`fetch_arrow_table`). Round 0
warms up; medians of RUNS rounds are compared. Row counts are compared between the engines.
"""

import datetime
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time

import duckdb
import pyarrow.flight as flight

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from test_pyarrow_flight import statement  # noqa: E402 (hand-encoded Flight SQL command)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERIES = {
    "scan_filter": "SELECT count(*) AS calls, sum(cost_usd) AS cost FROM spans "
                   "WHERE model = 'claude-opus-4-1' AND input_tokens > 8000",
    "group_by_work_item": "SELECT work_item_id, count(*) AS spans, sum(input_tokens) AS tokens FROM spans "
                          "GROUP BY work_item_id ORDER BY tokens DESC, work_item_id LIMIT 100",
    "join_outcomes": "SELECT o.outcome, count(*) AS spans, sum(s.input_tokens) AS tokens "
                     "FROM spans s JOIN outcomes o ON s.work_item_id = o.work_item_id "
                     "GROUP BY o.outcome ORDER BY o.outcome",
    "top_k": "SELECT trace_id, span_id, input_tokens FROM spans "
             "ORDER BY input_tokens DESC NULLS LAST, span_id LIMIT 20",
    "time_buckets": "SELECT date_trunc('day', start_time) AS day, workflow, count(*) AS spans, "
                    "sum(cost_usd) AS cost FROM spans GROUP BY 1, 2 ORDER BY 1, 2",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(binary, data):
    """One process, every query once: {name: ms}."""
    script = "".join(sql + ";\n" for sql in QUERIES.values())
    out = subprocess.run([binary, "query", "--data", data, "--format", "csv", "--timing"],
                         input=script, capture_output=True, text=True, check=True)
    times = [float(t) for t in re.findall(r"rows in ([0-9.]+) ms", out.stderr)]
    return dict(zip(QUERIES, times))


def over_flight(client):
    times, rows = {}, {}
    for name, sql in QUERIES.items():
        started = time.perf_counter()
        info = client.get_flight_info(statement(sql))
        table = client.do_get(info.endpoints[0].ticket).read_all()
        times[name] = (time.perf_counter() - started) * 1e3
        rows[name] = table.num_rows
    return times, rows


def in_duckdb(con):
    times, rows = {}, {}
    for name, sql in QUERIES.items():
        started = time.perf_counter()
        table = con.sql(sql).fetch_arrow_table()
        times[name] = (time.perf_counter() - started) * 1e3
        rows[name] = table.num_rows
    return times, rows


def main():
    binary, data = sys.argv[1], os.path.abspath(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    con = duckdb.connect()
    for table in ["spans", "outcomes"]:
        con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}/{table}/**/*.parquet')")
    spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        results = {path: {q: [] for q in QUERIES} for path in ["in-process", "Flight", "DuckDB"]}
        for round in range(runs + 1):
            local = in_process(binary, data)
            remote, flight_rows = over_flight(client)
            duck, duck_rows = in_duckdb(con)
            if flight_rows != duck_rows:
                raise RuntimeError(f"row counts differ: Flight {flight_rows}, DuckDB {duck_rows}")
            print(f"round {round}: {local} {remote} {duck}", file=sys.stderr, flush=True)
            if round:
                for path, times in [("in-process", local), ("Flight", remote), ("DuckDB", duck)]:
                    for q in QUERIES:
                        results[path][q].append(times[q])
    finally:
        server.kill()

    med = {path: {q: statistics.median(t) for q, t in per.items()} for path, per in results.items()}
    lines = [f"# Ad-hoc queries vs DuckDB, {datetime.date.today()}", "",
             f"{spans:,} spans; release build; DuckDB {duckdb.__version__}; {os.cpu_count()} cores; "
             f"median of {runs} interleaved rounds after a warm-up. In-process = statement time of "
             "`tokenledger query --timing`; Flight = pyarrow.flight from GetFlightInfo to the last "
             "batch against `tokenledger serve`; DuckDB = `fetch_arrow_table`.", "",
             "| query | in-process | Flight | DuckDB | in-process / DuckDB | Flight / DuckDB |",
             "|---|---|---|---|---|---|"]
    ratios = {"in-process": [], "Flight": []}
    for q in QUERIES:
        a, f, d = med["in-process"][q], med["Flight"][q], med["DuckDB"][q]
        ratios["in-process"].append(a / d)
        ratios["Flight"].append(f / d)
        lines.append(f"| {q} | {a:.0f} ms | {f:.0f} ms | {d:.0f} ms | {a / d:.2f}× | {f / d:.2f}× |")
    geo = {p: math.exp(sum(map(math.log, r)) / len(r)) for p, r in ratios.items()}
    lines += ["", f"Geometric mean: in-process **{geo['in-process']:.2f}×**, Flight **{geo['Flight']:.2f}×** "
              "DuckDB (below 1: tokenledger faster). Row counts identical between Flight and DuckDB.", ""]
    report = "\n".join(lines)
    print(report)
    name = os.environ.get("ADHOC_RESULTS", f"{datetime.date.today()}-adhoc")
    with open(os.path.join(ROOT, "benches", "results", f"{name}.md"), "w") as out:
        out.write(report)


if __name__ == "__main__":
    main()
