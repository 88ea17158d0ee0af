#!/usr/bin/env bash
# Ad-hoc analyst queries (scan with filter, group-by work item, join, top-k, time buckets) in
# tokenledger in-process and over Flight SQL, beside DuckDB on the same files. Release build.
# Usage: benches/adhoc.sh [WORK_ITEMS] [RUNS]   (default 900000 work items ≈ 10 M spans, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
work_items="${1:-900000}"
runs="${2:-5}"
scripts/test.sh --venv-only
cargo build --release --locked --bin tokenledger
binary="${CARGO_TARGET_DIR:-target}/release/tokenledger"
data="benches/data/gen-$work_items"
[ -d "$data/spans" ] || "$binary" gen --out "$data" --work-items "$work_items" --seed 42
mkdir -p benches/results
exec .venv/bin/python3 benches/adhoc.py "$binary" "$data" "$runs"
