"""tokenledger beside DuckDB on the same Parquet files: the eight reports and five ad-hoc analyst
queries, each timed in tokenledger in-process, through `tokenledger serve` over Flight SQL, and in
DuckDB; then one large result streamed over Flight against collecting it in-process.

usage: harness.py TOKENLEDGER RUNS RESULTS.md LABEL=DATA_DIR [LABEL=DATA_DIR ...]
(benches/run.sh builds, generates the data and calls this.)

Per data set, every round runs all queries once per path, the paths interleaved (in-process,
Flight, DuckDB, in-process, …): in-process = statement time printed by one `tokenledger query
--timing` process per round (session open, so file listing is excluded, as DuckDB's views
exclude it); Flight = pyarrow.flight from GetFlightInfo to the last decoded batch; DuckDB =
`to_arrow_table`. Round 0 warms up and is not counted; medians of RUNS rounds are compared.
Every query's Flight answer is compared with DuckDB's, value by value (numbers to 1e-6 relative),
an independent check of the reports at scale.
"""

import datetime
import decimal
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

import duckdb
import pyarrow.flight as flight

from duckdb_reports import REPORTS, ROOT, create_views

sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from test_pyarrow_flight import statement  # noqa: E402 (hand-encoded Flight SQL command)

ADHOC = {
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
QUERIES = {r: f"SELECT * FROM {r} ORDER BY 1, 2 NULLS FIRST" for r in REPORTS} | ADHOC
PATHS = ["in-process", "Flight", "DuckDB"]
TARGET_GEOMEAN, TARGET_SINGLE, TARGET_FLIGHT = 0.8, 1.5, 0.8


def main():
    binary, runs, results_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sets = [arg.split("=", 1) for arg in sys.argv[4:]]
    sections = [measure(binary, label, os.path.abspath(data), runs) for label, data in sets]
    report = "\n".join([header(runs)] + sections + [tuning_log()])
    with open(results_path, "w") as out:
        out.write(report)
    print(report)


def measure(binary, label, data, runs):
    con = duckdb.connect()
    create_views(con, data)
    spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    times = {path: {q: [] for q in QUERIES} for path in PATHS}
    with Server(binary, data) as server:
        client = flight.FlightClient(server.uri)
        for round in range(runs + 1):
            measured = {"in-process": in_process(binary, data)}
            measured["Flight"], flight_answers = timed(lambda sql: flight_table(client, sql))
            measured["DuckDB"], duck_answers = timed(lambda sql: con.sql(sql).to_arrow_table())
            log(f"{label} round {round}: " + ", ".join(
                f"{p} {sum(measured[p].values()) / 1e3:.1f} s" for p in PATHS))
            if round:
                for path in PATHS:
                    for q in QUERIES:
                        times[path][q].append(measured[path][q])
        mismatches = [m for q in QUERIES for m in differences(q, flight_answers[q], duck_answers[q])]
        pyarrow_ms = large_over_pyarrow(client, runs)
    large = large_result(data, runs) | {"pyarrow_ms": pyarrow_ms}
    return section(label, spans, times, mismatches, large)


def in_process(binary, data):
    """Every query once in one `tokenledger query --timing` process: {query: ms}."""
    script = "".join(sql + ";\n" for sql in QUERIES.values())
    out = subprocess.run([binary, "query", "--data", data, "--format", "csv", "--timing"],
                         input=script, capture_output=True, text=True, check=True)
    times = [float(t) for t in re.findall(r"rows in ([0-9.]+) ms", out.stderr)]
    if len(times) != len(QUERIES):
        raise RuntimeError(f"expected {len(QUERIES)} timings, got {len(times)}: {out.stderr[-2000:]}")
    return dict(zip(QUERIES, times))


def flight_table(client, sql):
    info = client.get_flight_info(statement(sql))
    return client.do_get(info.endpoints[0].ticket).read_all()


def timed(run):
    """Runs every query through `run`: ({query: ms}, {query: arrow table})."""
    times, answers = {}, {}
    for name, sql in QUERIES.items():
        started = time.perf_counter()
        answers[name] = run(sql)
        times[name] = (time.perf_counter() - started) * 1e3
    return times, answers


def differences(query, ours, theirs):
    """Where tokenledger's answer (over Flight) differs from DuckDB's; empty when they agree."""
    a, b = ours.to_pylist(), theirs.to_pylist()
    if len(a) != len(b):
        return [f"{query}: {len(a)} rows vs DuckDB's {len(b)}"]
    for row_a, row_b in zip(a, b):
        for x, y in zip(row_a.values(), row_b.values()):
            if not same(x, y):
                return [f"{query}: {x!r} vs DuckDB's {y!r} in row {list(row_a.values())[:2]}"]
    return []


def same(ours, theirs):
    if isinstance(theirs, decimal.Decimal):  # HUGEINT sums and DECIMAL arithmetic → decimal128
        theirs = float(theirs)
    # DuckDB's regr_slope gives NaN where marginal_token_utility gives NULL (fewer than two points).
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return ours is None
    if isinstance(theirs, (int, float)) and isinstance(ours, (int, float)):
        return math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-9)
    return ours == theirs


def large_result(data, runs):
    """The Flight streaming benchmark: server and Rust client in one process, interleaved with
    collecting the same query in-process."""
    out = subprocess.run(["cargo", "bench", "--quiet", "--locked", "--bench", "flight_streaming", "--",
                          data, str(runs)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    log(out)
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[-1]))
    return {k: float(v) for k, v in fields.items()}


def large_over_pyarrow(client, runs):
    """Median ms to stream the large result to pyarrow.flight (batches decoded, then dropped)."""
    def once():
        started = time.perf_counter()
        info = client.get_flight_info(statement(large_query()))
        for _ in client.do_get(info.endpoints[0].ticket):
            pass
        return (time.perf_counter() - started) * 1e3
    once()
    return statistics.median(once() for _ in range(runs))


class Server:
    """`tokenledger serve` on a free loopback port, for the life of a `with` block."""

    def __init__(self, binary, data):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.uri = f"grpc://127.0.0.1:{port}"
        self.process = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", "--no-http"],
                                        stderr=subprocess.DEVNULL)

    def __enter__(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                flight_table(flight.FlightClient(self.uri), "SELECT 1")
                return self
            except flight.FlightUnavailableError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"tokenledger serve did not start on {self.uri}")
                time.sleep(0.2)

    def __exit__(self, *_):
        self.process.kill()
        self.process.wait()


def header(runs):
    return "\n".join([
        f"# tokenledger vs DuckDB, {datetime.date.today()}", "",
        f"`benches/run.sh`: release build, DuckDB {duckdb.__version__}, {os.cpu_count()} cores "
        f"({platform.machine()}), data from `tokenledger gen --seed 42`. Median of {runs} interleaved "
        "rounds after a warm-up. In-process = statement time of `tokenledger query --timing`; "
        "Flight = pyarrow.flight against `tokenledger serve`, GetFlightInfo to the last batch; "
        "DuckDB = `to_arrow_table` on views over the same files, the reports with tokenledger's "
        "functions written out in plain SQL (`benches/duckdb_reports.py`). Ratios below 1: "
        "tokenledger faster.", ""])


def section(label, spans, times, mismatches, large):
    med = {p: {q: statistics.median(t) for q, t in per.items()} for p, per in times.items()}
    lines = [f"## {label}: {spans:,} spans", ""]
    summary = {}
    for title, queries in [("Reports", REPORTS), ("Ad-hoc queries", list(ADHOC))]:
        lines += [f"### {title}", "",
                  "| query | in-process | Flight | DuckDB | in-process / DuckDB | Flight / DuckDB |",
                  "|---|---|---|---|---|---|"]
        ratios = {p: [med[p][q] / med["DuckDB"][q] for q in queries] for p in ["in-process", "Flight"]}
        for i, q in enumerate(queries):
            lines.append(f"| {q} | {ms(med['in-process'][q])} | {ms(med['Flight'][q])} | "
                         f"{ms(med['DuckDB'][q])} | {ratios['in-process'][i]:.2f}× | {ratios['Flight'][i]:.2f}× |")
        geo = {p: math.exp(sum(map(math.log, r)) / len(r)) for p, r in ratios.items()}
        worst = max(zip(ratios["in-process"], queries))
        lines += ["", f"Geometric mean: in-process **{geo['in-process']:.2f}×**, Flight "
                      f"**{geo['Flight']:.2f}×**; slowest in-process: {worst[1]} at {worst[0]:.2f}×.", ""]
        summary[title] = (geo["in-process"], worst)
    rows, local, remote, py = large["rows"], large["in_process_ms"], large["flight_ms"], large["pyarrow_ms"]
    share = local / remote
    lines += ["### One large result over Flight", "",
              f"`{large_query()}` ({int(rows):,} rows), `benches/flight_streaming.rs`: "
              "in-process collection and the Rust Flight SQL client against the server, both in one "
              "process, interleaved.", "",
              "| in-process collect | Flight (Rust client) | Flight / in-process throughput |",
              "|---|---|---|",
              f"| {ms(local)} ({rows / local / 1e3:.1f} M rows/s) | {ms(remote)} "
              f"({rows / remote / 1e3:.1f} M rows/s) | **{share:.0%}** |", ""]
    lines += [f"The same stream read by pyarrow.flight from `tokenledger serve` (a separate process): "
              f"{ms(py)} ({rows / py / 1e3:.1f} M rows/s, {local / py:.0%} of in-process).", ""]
    geo, (worst, worst_query) = summary["Reports"]
    all_worst = max(summary["Reports"][1], summary["Ad-hoc queries"][1])
    lines += ["### Against the targets", "",
              f"- Report suite geometric mean ≤ {TARGET_GEOMEAN}×: {geo:.2f}× — "
              f"{'met' if geo <= TARGET_GEOMEAN else 'missed'}.",
              f"- No single query above {TARGET_SINGLE}× (in-process): slowest {all_worst[1]} at "
              f"{all_worst[0]:.2f}× — {'met' if all_worst[0] <= TARGET_SINGLE else 'missed'}.",
              f"- Flight ≥ {TARGET_FLIGHT:.0%} of in-process throughput: {share:.0%} — "
              f"{'met' if share >= TARGET_FLIGHT else 'missed'}.", "",
              "Answers over Flight against DuckDB's: " + (
                  "identical on every query (numbers to 1e-6 relative)." if not mismatches
                  else "; ".join(mismatches)), ""]
    return "\n".join(lines)


def large_query():
    source = open(os.path.join(ROOT, "benches", "flight_streaming.rs")).read()
    return " ".join(re.search(r'const LARGE_SQL: &str = "(.*?)";', source, re.S).group(1)
                    .replace("\\\n", " ").split())


def tuning_log():
    """The hand-kept record of what helped and what hurt, so each results file stands alone."""
    return open(os.path.join(ROOT, "benches", "tuning.md")).read()


def ms(value):
    return f"{value:,.0f} ms"


def log(message):
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
