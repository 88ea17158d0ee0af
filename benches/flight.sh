#!/usr/bin/env bash
# Flight SQL streaming throughput against collecting the same query in-process (issue #4's target:
# Flight >= 80 % of in-process rows/s). Release build.
# Usage: benches/flight.sh [WORK_ITEMS] [RUNS]   (default 900000 work items ≈ 10 M spans, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${2:-5}"
source benches/setup.sh
data=$(generated_data "${1:-900000}")
# In-process vs arrow-flight's Rust client, both in one process.
cargo bench --locked --bench flight_streaming -- "$PWD/$data" "$runs"
# The same stream read by pyarrow.flight (gRPC C++) from a separate `tokenledger serve`.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$binary" serve --data "$data" --listen "127.0.0.1:$port" 2>/dev/null &
server=$!
trap 'kill $server' EXIT
sleep 2
.venv/bin/python3 benches/flight_pyarrow.py "$port" "$runs"
