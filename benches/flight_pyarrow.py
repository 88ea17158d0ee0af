"""Streams one query from a running `tokenledger serve` with pyarrow.flight (gRPC C++), decoding
every batch, and prints the median rows/s of RUNS runs after a warm-up.

usage: flight_pyarrow.py PORT [RUNS] [SQL]
"""

import os
import statistics
import sys
import time

import pyarrow.flight as flight

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from test_pyarrow_flight import statement  # noqa: E402 (hand-encoded Flight SQL command)

SQL = ("SELECT trace_id, span_id, workflow, model, input_tokens, output_tokens, cost_usd, "
       "start_time FROM spans")


def stream(client, sql):
    started = time.perf_counter()
    info = client.get_flight_info(statement(sql))
    rows = sum(chunk.data.num_rows for chunk in client.do_get(info.endpoints[0].ticket))
    return rows, time.perf_counter() - started


def main():
    port = int(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    sql = sys.argv[3] if len(sys.argv) > 3 else SQL
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    stream(client, sql)  # warm-up
    results = [stream(client, sql) for _ in range(runs)]
    rows = results[0][0]
    median = statistics.median(t for _, t in results)
    print(f"pyarrow.flight client: {rows} rows, median {median:.3f} s = {rows / median / 1e6:.2f} M rows/s")


if __name__ == "__main__":
    main()
