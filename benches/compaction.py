"""Compaction (#16): the spans of a generated data set as FILES small landing files, as the same
files compacted into the curated Delta table, and as one large file, on local disk and on S3
(SeaweedFS on 127.0.0.1). Times the first query and the eight reports, each a fresh
`tokenledger` process timed from start to exit, interleaved, median of RUNS; and the compaction
itself: wall time, rows/s and peak RSS.

Target (issue #16): after compaction a query costs at most 1.2x the single-large-file layout.

usage: compaction.py TOKENLEDGER SOURCE_DATA OUT_DIR [FILES] [RUNS]
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from files import BUCKET, KEY, SECRET, start_s3, upload

FIRST_QUERY = "SELECT count(*), sum(input_tokens), count(DISTINCT span_id) FROM spans"
TARGET = 1.2


def write_layouts(source: str, out: str, files: int) -> tuple:
    """`small` (FILES landing files) and `one` (one file) with the source's other tables."""
    spans = ds.dataset(os.path.join(source, "spans"), format="parquet").to_table()
    layouts = {name: os.path.join(out, f"compaction-{name}") for name in ("small", "one")}
    for layout in layouts.values():
        shutil.rmtree(layout, ignore_errors=True)
        os.makedirs(os.path.join(layout, "spans", "otlp"))
        for table in ("outcomes", "model_prices", "baselines"):
            shutil.copytree(os.path.join(source, table), os.path.join(layout, table))
    step = -(-spans.num_rows // files)
    for i in range(files):
        part = spans.slice(i * step, step)
        path = os.path.join(layouts["small"], "spans", "otlp", f"part-{i:05}.parquet")
        pq.write_table(part, path, compression="zstd")
    pq.write_table(spans, os.path.join(layouts["one"], "spans", "all.parquet"), compression="zstd")
    return spans.num_rows, layouts


def run(binary: str, args: list, env: dict) -> tuple:
    """Runs tokenledger; returns (seconds, stdout, stderr)."""
    started = time.perf_counter()
    proc = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
    stdout, stderr = proc.stdout, proc.stderr
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"tokenledger {' '.join(args)}: {stderr}")
    return elapsed, stdout, stderr


def compact(binary: str, data: str, env: dict) -> tuple:
    """Compacts the spans; returns (seconds, peak RSS in MiB, stderr)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "compact", "--data", data, "--table", "spans", "--min-age", "0", "--grace", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    stderr = proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"compact {data}: {stderr}")
    return elapsed, usage.ru_maxrss / 1024, stderr


def reports(binary: str) -> list:
    _, out, _ = run(binary, ["report"], os.environ)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def main():
    binary, source, out = sys.argv[1:4]
    files = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    rows, layouts = write_layouts(source, out, files)
    work = tempfile.mkdtemp(prefix="tokenledger-compaction-bench-")
    weed = os.path.join(os.path.dirname(sys.executable), "weed")
    proc, fs, endpoint = start_s3(weed, work)
    s3_env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                  AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        compacted = os.path.join(out, "compaction-compacted")
        shutil.rmtree(compacted, ignore_errors=True)
        shutil.copytree(layouts["small"], compacted)
        upload(fs, layouts["small"], "small")
        upload(fs, layouts["small"], "compacted")
        upload(fs, layouts["one"], "one")
        compactions = {
            "local": compact(binary, compacted, os.environ),
            "S3": compact(binary, f"s3://{BUCKET}/compacted", s3_env),
        }
        cases = [
            (f"local, {files} landing files", layouts["small"], os.environ),
            ("local, compacted", compacted, os.environ),
            ("local, 1 file", layouts["one"], os.environ),
            (f"S3, {files} landing files", f"s3://{BUCKET}/small", s3_env),
            ("S3, compacted", f"s3://{BUCKET}/compacted", s3_env),
            ("S3, 1 file", f"s3://{BUCKET}/one", s3_env),
        ]
        names = reports(binary)
        queries = [("first query", ["query", "--format", "csv", FIRST_QUERY])] + [
            (name, ["report", name, "--format", "csv"]) for name in names]
        times = {(case, query): [] for case, _, _ in cases for query, _ in queries}
        answers = {query: {} for query, _ in queries}
        for round in range(runs + 1):  # round 0 warms the page cache and the S3 server
            for query, args in queries:
                for case, data, env in cases:
                    # Reports over 10,000 landing files take minutes per round on S3; with
                    # SMALL_FILE_REPORTS=0 only the first query times them.
                    if ("landing files" in case and query != "first query"
                            and os.environ.get("SMALL_FILE_REPORTS", "1") == "0"):
                        continue
                    elapsed, stdout, _ = run(binary, [*args, "--data", data], env)
                    answers[query].setdefault(case, stdout.count("\n"))
                    if query == "first query":
                        answers[query][case] = stdout.splitlines()[1]
                    if round:
                        times[(case, query)].append(elapsed)
        for query, by_case in answers.items():
            if len(set(by_case.values())) != 1:
                raise RuntimeError(f"{query}: layouts disagree: {by_case}")

        print(f"{rows:,} spans from {source}; {files:,} landing files of about "
              f"{rows // files} rows; median of {runs} interleaved runs, whole process.\n")
        print("## Compaction (`tokenledger compact --table spans --min-age 0 --grace 0`)\n")
        print("| store | wall | rows/s | peak RSS |")
        print("|---|---|---|---|")
        for store, (seconds, rss, _) in compactions.items():
            print(f"| {store} | {seconds:.1f} s | {rows / seconds:,.0f} | {rss:.0f} MiB |")
        print("\n## Query times\n")
        header = "| query | " + " | ".join(case for case, _, _ in cases) + " |"
        print(header)
        print("|---" * (len(cases) + 1) + "|")
        ratios = {"local": [], "S3": []}
        for query, _ in queries:
            cells = []
            for case, _, _ in cases:
                measured = times[(case, query)]
                cells.append(f"{statistics.median(measured) * 1e3:.0f} ms" if measured else "-")
            print(f"| {query} | " + " | ".join(cells) + " |")
            for store in ratios:
                compacted_time = statistics.median(times[(f"{store}, compacted", query)])
                one_time = statistics.median(times[(f"{store}, 1 file", query)])
                ratios[store].append((query, compacted_time / one_time))
        print(f"\n## Compacted vs one large file (target <= {TARGET}x)\n")
        print("| query | local | S3 |")
        print("|---|---|---|")
        for (query, local), (_, s3) in zip(ratios["local"], ratios["S3"]):
            mark = lambda r: f"{r:.2f}x" + ("" if r <= TARGET else " **missed**")
            print(f"| {query} | {mark(local)} | {mark(s3)} |")
        for store, values in ratios.items():
            geo = statistics.geometric_mean([r for _, r in values])
            print(f"\n{store}: geometric mean {geo:.2f}x, worst {max(r for _, r in values):.2f}x")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
