#!/usr/bin/env bash
# Generator throughput and a first query timing at 10 M spans, beside DuckDB. Release build.
# Usage: benches/foundation.sh [WORK_ITEMS]   (default 900000 work items ≈ 10 M spans)
set -euo pipefail
cd "$(dirname "$0")/.."
work_items="${1:-900000}"
source benches/setup.sh
exec .venv/bin/python3 benches/foundation.py "$binary" "benches/data/gen-$work_items" "$work_items"
