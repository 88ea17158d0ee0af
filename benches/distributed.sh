#!/usr/bin/env bash
# Scale-out (#17): the reports and ad-hoc queries on one node vs through workers, pinned to this
# machine's cores with taskset; with WORKERS=host:port,... it uses those workers instead (a real
# cluster, no pinning). Every answer is compared with the one-node answer.
# Usage: benches/distributed.sh [WORK_ITEMS] [RUNS] [PARTITION_BYTES]   (default ≈10 M spans, 3 runs, 16MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
data=$(generated_data "${1:-900000}")
out="benches/results/$(date +%F)-distributed.md"
.venv/bin/python3 benches/distributed.py "$binary" "$data" "${2:-3}" "${3:-16MiB}" | tee "$out"
echo "written to $out" >&2
