#!/usr/bin/env bash
# The eight reports on ~10 M spans, tokenledger beside DuckDB (plain-SQL equivalents), release build.
# Usage: benches/reports.sh [WORK_ITEMS]   (default 900000; reuses benches/data/gen-N if present)
set -euo pipefail
cd "$(dirname "$0")/.."
work_items="${1:-900000}"
[ -x .venv/bin/python3 ] || { python3 -m venv .venv && .venv/bin/pip install --quiet -r scripts/requirements-test.txt; }
cargo build --release --locked --bin tokenledger
binary="${CARGO_TARGET_DIR:-target}/release/tokenledger"
data="benches/data/gen-$work_items"
[ -d "$data/spans" ] || "$binary" gen --out "$data" --work-items "$work_items" --seed 42
mkdir -p benches/results
exec .venv/bin/python3 benches/reports.py "$binary" "$data"
