#!/usr/bin/env bash
# Generator throughput and a first query timing at 10 M spans, beside DuckDB. Release build.
# Usage: benches/foundation.sh [WORK_ITEMS]   (default 900000 work items ≈ 10 M spans)
set -euo pipefail
cd "$(dirname "$0")/.."
work_items="${1:-900000}"
if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv && .venv/bin/pip install --quiet -r scripts/requirements-test.txt
fi
cargo build --release --locked --bin tokenledger
target_dir="${CARGO_TARGET_DIR:-target}"
exec .venv/bin/python3 benches/foundation.py "$target_dir/release/tokenledger" "benches/data/gen-$work_items" "$work_items"
