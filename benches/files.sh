#!/usr/bin/env bash
# Time to first query over many small files vs one file, local disk and S3 (issue #6's figure).
# Usage: benches/files.sh [FILES] [WORK_ITEMS] [RUNS]   (default 1000 files of 20000 work items' spans)
set -euo pipefail
cd "$(dirname "$0")/.."
files="${1:-1000}"
work_items="${2:-20000}"
runs="${3:-5}"
scripts/test.sh --venv-only
cargo build --release --locked --bin tokenledger
binary="${CARGO_TARGET_DIR:-target}/release/tokenledger"
source="benches/data/gen-$work_items"
[ -d "$source/spans" ] || "$binary" gen --out "$source" --work-items "$work_items" --seed 42
exec .venv/bin/python3 benches/files.py "$binary" "$source" benches/data "$files" "$runs"
