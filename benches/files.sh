#!/usr/bin/env bash
# Time to first query over many small files vs one file, local disk and S3 (issue #6's figure).
# Usage: benches/files.sh [FILES] [WORK_ITEMS] [RUNS]   (default 1000 files of 20000 work items' spans)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
source=$(generated_data "${2:-20000}")
exec .venv/bin/python3 benches/files.py "$binary" "$source" benches/data "${1:-1000}" "${3:-5}"
