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
import tempfile
import time

import duckdb
import pyarrow as pa
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


def report_sql(report):
    """How the harness asks for a report: every row, in an order both engines give alike."""
    return f"SELECT * FROM {report} ORDER BY 1, 2 NULLS FIRST"


# SUITES=adhoc (or reports) runs one suite only: at 100 M spans a round of the reports takes
# minutes on each side, the ad-hoc queries seconds.
SUITES = os.environ.get("SUITES", "reports,adhoc").split(",")
SUITE_QUERIES = [("Reports", REPORTS if "reports" in SUITES else []),
                 ("Ad-hoc queries", list(ADHOC) if "adhoc" in SUITES else [])]
QUERIES = {r: report_sql(r) for r in SUITE_QUERIES[0][1]} | {q: ADHOC[q] for q in SUITE_QUERIES[1][1]}
PATHS = ["in-process", "Flight", "DuckDB"]
# Issue #19's targets: geometric mean per suite, any one query (in-process and over Flight), the
# server's core-seconds to stream the large result against collecting it in-process.
TARGET_GEOMEAN, TARGET_SINGLE, TARGET_FLIGHT_CPU = 0.5, 1.0, 1.5
# The large result is collected whole in-process (≈ 1.1 GB at 10 M spans): not at 100 M.
LARGE_RESULT_SIZES = os.environ.get("LARGE_RESULT_SIZES", "1M,10M").split(",")
# WARMUP=0 counts every round (for 100 M spans, where a round takes long: read the files once
# beforehand so they are in the page cache, as a warm-up round would leave them).
WARMUP = os.environ.get("WARMUP", "1") != "0"
# Peak memory per report, each in a fresh process of either engine.
MEMORY_SIZES = os.environ.get("MEMORY_SIZES", "10M").split(",")


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
    # DUCKDB_MEMORY_LIMIT (e.g. 12GB): at 100 M spans DuckDB's default (80 % of RAM) beside a
    # warm `serve` got the harness killed by the kernel's OOM killer.
    if "DUCKDB_MEMORY_LIMIT" in os.environ:
        con.sql(f"SET memory_limit = '{os.environ['DUCKDB_MEMORY_LIMIT']}'")
    create_views(con, data)
    spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    times = {path: {q: [] for q in QUERIES} for path in PATHS}
    with Server(binary, data) as server:
        client = flight.FlightClient(server.uri)
        # Round 0 is the warm-up, not counted.
        for round in range(0 if WARMUP else 1, runs + 1):
            measured = {"in-process": in_process(binary, data)}
            log(f"{label} round {round} in-process: {measured['in-process']}")
            measured["Flight"], flight_answers = timed(lambda sql: flight_table(client, sql))
            measured["DuckDB"], duck_answers = timed(lambda sql: con.sql(sql).to_arrow_table())
            log(f"{label} round {round}: " + ", ".join(
                f"{p} {sum(measured[p].values()) / 1e3:.1f} s" for p in PATHS))
            if round:
                for path in PATHS:
                    for q in QUERIES:
                        times[path][q].append(measured[path][q])
        mismatches = [m for q in QUERIES for m in differences(q, flight_answers[q], duck_answers[q])]
        large = None
        if label in LARGE_RESULT_SIZES:
            large = large_over_pyarrow(client, server.process.pid, runs)
    if large is not None:
        large |= large_result(data, runs)
    memory = peak_memory(binary, data) if label in MEMORY_SIZES else None
    return section(label, spans, times, mismatches, large, memory)


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
    """Runs every query through `run`: ({query: ms}, {query: arrow table}). A query the server
    refuses (e.g. past its per-query memory limit) or DuckDB cannot finish gets NaN ms and its
    error as the answer."""
    times, answers = {}, {}
    for name, sql in QUERIES.items():
        started = time.perf_counter()
        try:
            answers[name] = run(sql)
            times[name] = (time.perf_counter() - started) * 1e3
            log(f"{name}: {times[name]:.0f} ms")
        # RESOURCE_EXHAUSTED arrives as ArrowInvalid; DuckDB out of spill space as duckdb.Error.
        except (flight.FlightError, pa.ArrowException, duckdb.Error) as e:
            answers[name] = f"failed after {time.perf_counter() - started:.0f} s: {str(e).split('.')[0]}"
            times[name] = math.nan
            log(f"{name}: {answers[name]}")
    return times, answers


def differences(query, ours, theirs):
    """Where tokenledger's answer (over Flight) differs from DuckDB's; empty when they agree."""
    if isinstance(ours, str):
        return [f"{query} over Flight {ours}"]
    if isinstance(theirs, str):
        return [f"{query} in DuckDB {theirs}"]
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


def large_over_pyarrow(client, server_pid, runs):
    """The large result streamed to pyarrow.flight (batches decoded, then dropped): median wall
    ms and the server's core-seconds per stream, from /proc."""
    def once():
        cpu, started = cpu_seconds(server_pid), time.perf_counter()
        info = client.get_flight_info(statement(large_query()))
        for _ in client.do_get(info.endpoints[0].ticket):
            pass
        return (time.perf_counter() - started) * 1e3, cpu_seconds(server_pid) - cpu
    once()
    measured = [once() for _ in range(runs)]
    return {"pyarrow_ms": statistics.median(m[0] for m in measured),
            "pyarrow_cpu_s": statistics.median(m[1] for m in measured)}


def cpu_seconds(pid):
    """User + system CPU of process `pid` so far, in seconds (from /proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory(binary, data):
    """Peak RSS (MiB) of each report run once in a fresh process: `tokenledger query` and a Python
    process running it in DuckDB; plus each engine's process running `SELECT 1`."""
    duck = ("import sys; sys.path.insert(0, sys.argv[1]); import duckdb; "
            "from duckdb_reports import create_views; con = duckdb.connect(); "
            "create_views(con, sys.argv[2]); con.sql(sys.argv[3]).to_arrow_table()")
    benches = os.path.join(ROOT, "benches")

    def ours(sql):
        return rss_of([binary, "query", "--data", data, "--format", "csv"], sql + ";\n")

    def theirs(sql):
        return rss_of([sys.executable, "-c", duck, benches, data, sql])

    memory = {"SELECT 1": (ours("SELECT 1"), theirs("SELECT 1"))}
    for report in REPORTS:
        memory[report] = (ours(report_sql(report)), theirs(report_sql(report)))
        log(f"memory {report}: {memory[report][0]:.0f} MiB vs DuckDB {memory[report][1]:.0f} MiB")
    return memory


def rss_of(command, stdin=None):
    """Peak RSS (MiB) of `command` run to its end, as GNU time reports it. (`wait4` here would
    not do: a child forked from this process starts with this process's peak, which is large.)"""
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name] + command, input=stdin or "",
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
        return int(report.read().split()[-1]) / 1024


class Server:
    """`tokenledger serve` on a free loopback port, for the life of a `with` block."""

    def __init__(self, binary, data):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.uri = f"grpc://127.0.0.1:{port}"
        # SERVE_ARGS: extra `serve` options, e.g. "--query-memory-limit 12GiB".
        extra = os.environ.get("SERVE_ARGS", "").split()
        self.process = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", "--no-http"]
                                        + extra, stderr=subprocess.DEVNULL)

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
        f"rounds {'after a warm-up' if WARMUP else 'without a warm-up round (files read into the page cache first)'}. In-process = statement time of `tokenledger query --timing`; "
        "Flight = pyarrow.flight against `tokenledger serve`, GetFlightInfo to the last batch; "
        "DuckDB = `to_arrow_table` on views over the same files, the reports with tokenledger's "
        "functions written out in plain SQL (`benches/duckdb_reports.py`). Ratios below 1: "
        "tokenledger faster.", ""])


def section(label, spans, times, mismatches, large, memory):
    med = {p: {q: statistics.median(t) for q, t in per.items()} for p, per in times.items()}
    lines = [f"## {label}: {spans:,} spans", ""]
    targets = []
    for title, queries in [(title, queries) for title, queries in SUITE_QUERIES if queries]:
        lines += [f"### {title}", "",
                  "| query | in-process | Flight | DuckDB | in-process / DuckDB | Flight / DuckDB |",
                  "|---|---|---|---|---|---|"]
        ratios = {p: [med[p][q] / med["DuckDB"][q] for q in queries] for p in ["in-process", "Flight"]}
        for i, q in enumerate(queries):
            lines.append(f"| {q} | {ms(med['in-process'][q])} | {ms(med['Flight'][q])} | "
                         f"{ms(med['DuckDB'][q])} | {ratios['in-process'][i]:.2f}× | {ratios['Flight'][i]:.2f}× |")
        # Queries that failed on a path (NaN) are left out of its figures and named below.
        finite = {p: [(x, q) for x, q in zip(r, queries) if math.isfinite(x)] for p, r in ratios.items()}
        geo = {p: math.exp(sum(math.log(x) for x, _ in f) / len(f)) if f else math.nan
               for p, f in finite.items()}
        worst = {p: max(f) if f else (math.nan, "none") for p, f in finite.items()}
        lines += ["", f"Geometric mean: in-process **{geo['in-process']:.2f}×**, Flight "
                      f"**{geo['Flight']:.2f}×**; slowest in-process: {worst['in-process'][1]} at "
                      f"{worst['in-process'][0]:.2f}×, over Flight: {worst['Flight'][1]} at "
                      f"{worst['Flight'][0]:.2f}×.", ""]
        targets += [f"{title} geometric mean ≤ {TARGET_GEOMEAN}× (in-process / Flight): "
                    f"{geo['in-process']:.2f}× / {geo['Flight']:.2f}× — "
                    f"{met(max(geo.values()) <= TARGET_GEOMEAN)}.",
                    f"{title}, no query above {TARGET_SINGLE}×: slowest {worst['in-process'][1]} "
                    f"{worst['in-process'][0]:.2f}× in-process, {worst['Flight'][1]} "
                    f"{worst['Flight'][0]:.2f}× over Flight — "
                    f"{met(max(w[0] for w in worst.values()) <= TARGET_SINGLE)}."]
    if large is None:
        lines += ["### One large result over Flight", "",
                  f"Not run at this size: it collects the whole result in memory in-process "
                  f"(sizes: LARGE_RESULT_SIZES={','.join(LARGE_RESULT_SIZES)}).", ""]
    else:
        large_lines, flight_target = large_section(large)
        lines += large_lines
        targets.append(flight_target)
    if memory is not None:
        lines += memory_section(memory)
        over = [r for r in REPORTS if memory[r][0] > memory[r][1]]
        targets.append(f"Peak RSS of each report ≤ DuckDB's: "
                       f"{'every report' if not over else 'above on ' + ', '.join(over)} — "
                       f"{met(not over)}.")
    lines += ["### Against the targets (#19)", ""] + [f"- {t}" for t in targets] + ["",
              "Answers over Flight against DuckDB's: " + (
                  "identical on every query (numbers to 1e-6 relative)." if not mismatches
                  else "; ".join(mismatches)), ""]
    return "\n".join(lines)


def large_section(large):
    """The large result's table and its line against the Flight CPU target."""
    rows, local, remote = large["rows"], large["in_process_ms"], large["flight_ms"]
    local_cpu = large["in_process_cpu_ms"] / 1e3
    lines = ["### One large result over Flight", "",
              f"`{large_query()}` ({int(rows):,} rows), `benches/flight_streaming.rs`: "
              "in-process collection and the Rust Flight SQL client against the server, both in one "
              "process, interleaved.", "",
              "| in-process collect | Flight (Rust client) | Flight / in-process throughput |",
              "|---|---|---|",
              f"| {ms(local)} ({rows / local / 1e3:.1f} M rows/s), {local_cpu:.2f} core-s | {ms(remote)} "
              f"({rows / remote / 1e3:.1f} M rows/s) | **{local / remote:.0%}** |", "",
              "The same stream read by pyarrow.flight from `tokenledger serve` (a separate process), "
              "the server's CPU read from /proc:", "",
              "| wall | server core-seconds | / in-process core-seconds |",
              "|---|---|---|"]
    wall, cpu = large["pyarrow_ms"], large["pyarrow_cpu_s"]
    lines.append(f"| {ms(wall)} ({rows / wall / 1e3:.1f} M rows/s) | {cpu:.2f} | {cpu / local_cpu:.2f}× |")
    target = (f"Server core-seconds per large stream ≤ {TARGET_FLIGHT_CPU}× in-process: "
              f"{cpu / local_cpu:.2f}× ({cpu:.2f} against {local_cpu:.2f}) — "
              f"{met(cpu / local_cpu <= TARGET_FLIGHT_CPU)}.")
    return lines + [""], target


def memory_section(memory):
    lines = ["### Peak memory per report", "",
             "Each report once in a fresh process: `tokenledger query` against a Python process "
             "running DuckDB (`to_arrow_table`); peak RSS as GNU time reports it. `SELECT 1` "
             "is each process's floor (DuckDB's includes Python and pyarrow).", "",
             "| report | tokenledger | DuckDB | ratio |", "|---|---|---|---|"]
    for report, (ours, theirs) in memory.items():
        lines.append(f"| {report} | {ours:,.0f} MiB | {theirs:,.0f} MiB | {ours / theirs:.2f}× |")
    return lines + [""]


def met(ok):
    return "met" if ok else "missed"


def large_query():
    source = open(os.path.join(ROOT, "benches", "flight_streaming.rs")).read()
    return " ".join(re.search(r'const LARGE_SQL: &str = "(.*?)";', source, re.S).group(1)
                    .replace("\\\n", " ").split())


def tuning_log():
    """The hand-kept record of what helped and what hurt, so each results file stands alone."""
    return open(os.path.join(ROOT, "benches", "tuning.md")).read()


def ms(value):
    return "failed" if math.isnan(value) else f"{value:,.0f} ms"


def log(message):
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
