#!/usr/bin/env bash
# The token-economics functions against inline SQL and built-in aggregates (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin tokenledger
mkdir -p benches/results
exec python3 benches/sqlbench.py "${CARGO_TARGET_DIR:-target}/release/tokenledger" benches/udfs.sql \
  "benches/results/$(date +%F)-udfs.md" --data testdata/handmade "$@"
