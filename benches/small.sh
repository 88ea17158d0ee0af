#!/usr/bin/env bash
# Small interactive queries over Flight SQL (ADBC, warm serve) beside DuckDB in-process, at 1 M
# and 10 M spans (issue #19's target: <= 1.0x). Usage: benches/small.sh [RUNS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
exec .venv/bin/python3 benches/small.py "$binary" "${1:-15}" \
  "1m=$(generated_data 90000)" "10m=$(generated_data 900000)"
