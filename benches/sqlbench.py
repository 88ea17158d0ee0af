"""Times SQL statements inside one tokenledger process, interleaved, and reports medians.

Usage: sqlbench.py TOKENLEDGER_BINARY BENCH.sql RESULTS.md [--data LOC] [--runs N]

BENCH.sql holds a setup part, then blocks that start with a comment line `-- bench: NAME`
(optionally `-- vs: OTHER` to report NAME's time as a ratio of OTHER's, and `-- rows: N` to
report rows per second). Every block runs once to warm up, then all blocks run in turn
(A B C A B C …) RUNS times, so drift in the machine hits them alike; the median is reported.
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess


def parse(path):
    setup, blocks, current = [], [], None
    for line in open(path):
        m = re.match(r"--\s*bench:\s*(\S+)", line)
        if m:
            current = {"name": m.group(1), "sql": [], "vs": None, "rows": None}
            blocks.append(current)
            continue
        m = re.match(r"--\s*(vs|rows):\s*(\S+)", line)
        if m and current is not None:
            current[m.group(1)] = m.group(2) if m.group(1) == "vs" else int(m.group(2))
            continue
        (current["sql"] if current else setup).append(line)
    for b in blocks:
        b["sql"] = "".join(b["sql"]).strip().rstrip(";") + ";\n"
    return "".join(setup), blocks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("bench")
    ap.add_argument("results")
    ap.add_argument("--data", default="testdata/handmade")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    setup, blocks = parse(args.bench)
    # Every statement prints one timing line; the setup's come first.
    setup_statements = "".join(l for l in setup.splitlines(True) if not l.lstrip().startswith("--")).count(";")
    script = setup + "".join(b["sql"] for b in blocks) * (args.runs + 1)
    out = subprocess.run(
        [args.binary, "query", "--data", args.data, "--format", "csv", "--timing"],
        input=script, check=True, capture_output=True, text=True,
    )
    times = [float(t) for t in re.findall(r"rows in ([0-9.]+) ms", out.stderr)][setup_statements:]
    assert len(times) == len(blocks) * (args.runs + 1), (len(times), out.stderr[-2000:])
    medians = {}
    for i, b in enumerate(blocks):
        runs = times[i::len(blocks)][1:]  # drop the warm-up
        medians[b["name"]] = (statistics.median(runs), min(runs), max(runs))

    lines = [
        f"# {os.path.basename(args.bench)}, {datetime.date.today()}",
        "",
        f"Release build, {os.cpu_count()} cores; median of {args.runs} interleaved runs after a warm-up, "
        "statement time as reported by `tokenledger query --timing`.",
        "",
        "| statement | median | min | max | ratio | rows/s |",
        "|---|---|---|---|---|---|",
    ]
    for b in blocks:
        med, lo, hi = medians[b["name"]]
        ratio = f"{med / medians[b['vs']][0]:.2f}× {b['vs']}" if b["vs"] else ""
        rate = f"{b['rows'] / med * 1e3 / 1e6:.1f} M" if b["rows"] else ""
        lines.append(f"| {b['name']} | {med:.1f} ms | {lo:.1f} ms | {hi:.1f} ms | {ratio} | {rate} |")
    report = "\n".join(lines) + "\n"
    print(report)
    with open(args.results, "w") as f:
        f.write(report)


if __name__ == "__main__":
    main()
