"""Scale-out (#17): the eight reports and the ad-hoc queries on one node and through workers.

On this 2-core machine (cores 0 and 1), each query is a fresh `tokenledger` process, timed from
start to exit (so a coordinator's connection to its workers is included), median of RUNS:

- one node:            `tokenledger` pinned to core 0 (so it plans with one partition);
- 2 workers, 1 core:   coordinator and two workers, all pinned to core 0: the cost of
                       distribution with no extra hardware (stages, serializing plans, Arrow IPC
                       over loopback). With a single worker datafusion-distributed keeps the whole
                       query on the coordinator, so two workers share the one core instead;
- 2 workers, 2 cores:  coordinator and worker A on core 0, worker B on core 1: twice the cores,
                       the most speed-up this machine can show (at most 2x).

A coordinator plans with at least two partitions (one partition leaves nothing to cut into
stages), so each task on a one-core worker runs two partitions.

Every answer through the workers is compared with the one-node answer (numbers within 1e-9).

On a real cluster, give the workers: `WORKERS=10.0.0.5:50061,10.0.0.6:50061 benches/distributed.sh`
runs the one-node baseline here and the queries through those workers, with no pinning.

usage: distributed.py TOKENLEDGER DATA RUNS [PARTITION_BYTES]
"""

import os
import secrets
import statistics
import subprocess
import sys
import time

from duckdb_reports import REPORTS
from harness import ADHOC

QUERIES = {r: f"SELECT * FROM {r} ORDER BY 1, 2 NULLS FIRST" for r in REPORTS} | ADHOC


def start_worker(binary: str, data: str, core) -> tuple:
    """A `tokenledger worker` on a free port (pinned to `core` when given): (process, address)."""
    args = [binary, "worker", "--data", data, "--listen", "127.0.0.1:0"]
    if core is not None:
        args = ["taskset", "-c", str(core)] + args
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if " listening on http://" in line:
            return proc, line.rsplit("http://", 1)[1].strip()
    raise RuntimeError("the worker did not start")


def run(binary: str, data: str, sql: str, core, workers, partition_bytes: str) -> tuple:
    """Runs one query; returns (seconds, CSV answer)."""
    args = [binary, "query", "--data", data, "--format", "csv", sql]
    if workers:
        args += ["--workers", ",".join(workers), "--partition-bytes", partition_bytes]
    if core is not None:
        args = ["taskset", "-c", str(core)] + args
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{sql}: {proc.stderr}")
    return elapsed, proc.stdout


def same_answer(a: str, b: str) -> bool:
    rows_a, rows_b = a.splitlines(), b.splitlines()
    if len(rows_a) != len(rows_b):
        return False
    for x, y in zip(rows_a, rows_b):
        for u, v in zip(x.split(","), y.split(",")):
            if u == v:
                continue
            try:
                fu, fv = float(u), float(v)
            except ValueError:
                return False
            if abs(fu - fv) > 1e-9 * max(abs(fu), abs(fv)):
                return False
    return True


def main():
    binary, data, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    partition_bytes = sys.argv[4] if len(sys.argv) > 4 else "16MiB"
    remote = [w for w in os.environ.get("WORKERS", "").split(",") if w]
    # Nodes of a cluster share a secret; remote workers must have been started with this one.
    os.environ.setdefault("TOKENLEDGER_CLUSTER_SECRET", secrets.token_hex(32))
    started = []
    try:
        if remote:
            setups = {"one node": (None, []), f"{len(remote)} workers": (None, remote)}
        else:
            a = start_worker(binary, data, 0)
            b = start_worker(binary, data, 0)
            c = start_worker(binary, data, 1)
            started = [a, b, c]
            setups = {
                "one node": (0, []),
                "2 workers, 1 core": (0, [a[1], b[1]]),
                "2 workers, 2 cores": (0, [a[1], c[1]]),
            }
        times = {name: {} for name in setups}
        wrong = []
        for query, sql in QUERIES.items():
            answers = {}
            for _ in range(runs):
                # Interleaved, so a slow moment of the machine hits every setup alike.
                for name, (core, workers) in setups.items():
                    seconds, answer = run(binary, data, sql, core, workers, partition_bytes)
                    times[name].setdefault(query, []).append(seconds)
                    answers[name] = answer
            for name, answer in answers.items():
                if not same_answer(answers["one node"], answer):
                    first = next((f"{a!r} vs {b!r}" for a, b in zip(
                        answers["one node"].splitlines(), answer.splitlines()) if a != b),
                        f"{len(answers['one node'].splitlines())} vs {len(answer.splitlines())} lines")
                    wrong.append(f"{query} ({name}): {first}")
        report(times, setups, wrong, data, runs, partition_bytes)
    finally:
        for proc, _ in started:
            proc.kill()


def report(times, setups, wrong, data, runs, partition_bytes):
    names = list(setups)
    base = names[0]
    print(f"# Scale-out: one node vs workers ({time.strftime('%Y-%m-%d')})\n")
    print(f"Data: `{data}`; median of {runs} runs, each a fresh process (start to exit); "
          f"partition bytes {partition_bytes}. Ratios are one node's time / the setup's "
          f"(above 1: faster through the workers).\n")
    print("| query | " + " | ".join(f"{n} (s)" for n in names) + " | "
          + " | ".join(f"speed-up, {n}" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    ratios = {n: [] for n in names[1:]}
    for query in QUERIES:
        medians = {n: statistics.median(times[n][query]) for n in names}
        cells = [f"{medians[n]:.2f}" for n in names]
        for n in names[1:]:
            ratio = medians[base] / medians[n]
            ratios[n].append(ratio)
            cells.append(f"{ratio:.2f}x")
        print(f"| {query} | " + " | ".join(cells) + " |")
    geomeans = {n: statistics.geometric_mean(r) for n, r in ratios.items()}
    print("| **geometric mean** | " + " | ".join("" for _ in names) + " | "
          + " | ".join(f"**{g:.2f}x**" for g in geomeans.values()) + " |")
    print("\nAnswers different from one node's: " + ("none." if not wrong else ""))
    for line in wrong:
        print(f"- {line}")


if __name__ == "__main__":
    main()
