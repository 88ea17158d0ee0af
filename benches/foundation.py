"""Foundation benchmark: generator throughput, and one group-by on 10 M spans beside DuckDB.

Usage: benches/foundation.sh [WORK_ITEMS]   (builds release, then runs this with the test venv)

Times are wall-clock medians of interleaved runs (tokenledger, DuckDB, tokenledger, ...) after a
warm-up of each. tokenledger's time is the statement time it reports with --timing (session set-up
and process start excluded, as DuckDB's in-process timing excludes them); the whole-process time is
shown beside it.
"""

import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import duckdb

RUNS = 5
QUERY = "SELECT workflow, count(*), sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1"
DUCK_QUERY = QUERY.replace("FROM spans", "FROM read_parquet('{dir}/spans/**/*.parquet')")


def run_tokenledger(binary, data):
    started = time.perf_counter()
    out = subprocess.run(
        [binary, "query", "--data", data, "--format", "csv", "--timing", QUERY],
        check=True, capture_output=True, text=True,
    )
    whole = time.perf_counter() - started
    statement_ms = float(re.search(r"in ([0-9.]+) ms", out.stderr).group(1))
    return statement_ms / 1e3, whole, out.stdout


def run_duckdb(con, data):
    started = time.perf_counter()
    rows = con.sql(DUCK_QUERY.format(dir=data)).fetchall()
    return time.perf_counter() - started, rows


def main():
    binary, data, work_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    subprocess.run(["rm", "-rf", data], check=True)
    started = time.perf_counter()
    gen = subprocess.run(
        [binary, "gen", "--out", data, "--work-items", str(work_items), "--seed", "42"],
        check=True, capture_output=True, text=True,
    )
    gen_secs = time.perf_counter() - started
    spans = int(re.search(r"(\d+) spans", gen.stderr).group(1))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)

    con = duckdb.connect()
    run_tokenledger(binary, data)
    run_duckdb(con, data)
    ours, ours_whole, theirs = [], [], []
    for _ in range(RUNS):
        t, whole, out = run_tokenledger(binary, data)
        ours.append(t)
        ours_whole.append(whole)
        d, rows = run_duckdb(con, data)
        theirs.append(d)
    expected = "workflow,count(*),sum(spans.input_tokens)\n" + "".join(f"{w},{c},{s}\n" for w, c, s in rows)
    assert out == expected, f"results differ:\n{out}\nvs\n{expected}"

    med = statistics.median
    lines = [
        f"# Foundation benchmark, {datetime.date.today()}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}; tokenledger release build; "
        f"DuckDB {duckdb.__version__} (Python). Median of {RUNS} interleaved runs after a warm-up.",
        "",
        "## Generator",
        "",
        f"`tokenledger gen --work-items {work_items}`: {spans:,} spans, {size / 1e6:.0f} MB of Parquet "
        f"in {gen_secs:.1f} s = **{spans / gen_secs / 1e6:.2f} M spans/s** (whole process, writing to local disk).",
        "",
        "## Query",
        "",
        f"`{QUERY}` over {spans:,} spans (results identical in both engines):",
        "",
        "| engine | median | min | max |",
        "|---|---|---|---|",
        f"| tokenledger (statement) | {med(ours) * 1e3:.0f} ms | {min(ours) * 1e3:.0f} ms | {max(ours) * 1e3:.0f} ms |",
        f"| tokenledger (whole process) | {med(ours_whole) * 1e3:.0f} ms | {min(ours_whole) * 1e3:.0f} ms | {max(ours_whole) * 1e3:.0f} ms |",
        f"| DuckDB | {med(theirs) * 1e3:.0f} ms | {min(theirs) * 1e3:.0f} ms | {max(theirs) * 1e3:.0f} ms |",
        "",
        f"Ratio tokenledger/DuckDB (statement medians): **{med(ours) / med(theirs):.2f}×**",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    path = os.path.join(os.path.dirname(__file__), "results", f"{datetime.date.today()}-foundation.md")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(report)
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
