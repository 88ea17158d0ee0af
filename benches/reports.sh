#!/usr/bin/env bash
# The eight reports on ~10 M spans, tokenledger beside DuckDB (plain-SQL equivalents), release build.
# Usage: benches/reports.sh [WORK_ITEMS]   (default 900000; reuses benches/data/gen-N if present)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
data=$(generated_data "${1:-900000}")
exec .venv/bin/python3 benches/reports.py "$binary" "$data"
