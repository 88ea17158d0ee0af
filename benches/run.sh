#!/usr/bin/env bash
# The benchmark harness: tokenledger beside DuckDB on the same generated Parquet files (reports,
# ad-hoc queries, in-process / over Flight / DuckDB, and one large result over Flight), written to
# benches/results/<date>.md. Installs the pinned venv, builds in release and generates the data.
#
# Usage: benches/run.sh [--sizes 1m,10m] [--runs 5]
#   sizes: 1m (≈1 M spans), 10m (≈10 M), 100m (≈100 M, on request: ~3 GB of Parquet, hours).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=1m,10m
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "usage: benches/run.sh [--sizes 1m,10m,100m] [--runs N]" >&2; exit 2 ;;
  esac
done
source benches/setup.sh
sets=()
for size in ${sizes//,/ }; do
  # `gen` makes about 11 spans per work item.
  case "$size" in
    1m) items=90000 ;;
    10m) items=900000 ;;
    100m) items=9000000 ;;
    *) echo "unknown size $size (1m, 10m or 100m)" >&2; exit 2 ;;
  esac
  sets+=("${size^^}=$(generated_data "$items")")
done
exec .venv/bin/python3 benches/harness.py "$binary" "$runs" "benches/results/$(date +%F).md" "${sets[@]}"
