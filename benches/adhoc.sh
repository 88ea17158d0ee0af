#!/usr/bin/env bash
# Ad-hoc analyst queries (scan with filter, group-by work item, join, top-k, time buckets) in
# tokenledger in-process and over Flight SQL, beside DuckDB on the same files. Release build.
# Usage: benches/adhoc.sh [WORK_ITEMS] [RUNS]   (default 900000 work items ≈ 10 M spans, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
data=$(generated_data "${1:-900000}")
exec .venv/bin/python3 benches/adhoc.py "$binary" "$data" "${2:-5}"
