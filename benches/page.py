"""Times the report page of a release `tokenledger serve`: the whole HTML (every report run and
every chart drawn), unfiltered and filtered, as a browser would fetch it. Prints a Markdown table."""

import statistics
import subprocess
import sys
import time
import urllib.request


def start(binary, data):
    server = subprocess.Popen(
        [binary, "serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )
    for line in server.stderr:
        if line.startswith("report page on http://"):
            return server, line.split(" on ")[1].strip()
    raise SystemExit("serve exited before the report page started")


def timed(url, runs):
    urllib.request.urlopen(url).read()  # warm: listing, footers, prices
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        body = urllib.request.urlopen(url).read()
        times.append((time.perf_counter() - started) * 1e3)
    return times, len(body)


def main():
    binary, data, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server, base = start(binary, data)
    try:
        print(f"Report page over {data}, release build, {runs} runs after one warm-up\n")
        print("| page | median ms | p90 ms | max ms | HTML bytes |")
        print("|---|---:|---:|---:|---:|")
        for name, query in [("every report", ""), ("one workflow, one month", "?workflow=invoice&from=2026-02-01&to=2026-02-28")]:
            times, size = timed(base + query, runs)
            times.sort()
            p90 = times[int(0.9 * (len(times) - 1))]
            print(f"| {name} | {statistics.median(times):.0f} | {p90:.0f} | {times[-1]:.0f} | {size:,} |")
    finally:
        server.terminate()
        server.wait()


main()
