#!/usr/bin/env bash
# Compaction (#16): FILES small landing files vs the same rows compacted vs one large file, local
# disk and S3 (SeaweedFS): time to first query, the eight reports, compaction rate and memory.
# Usage: benches/compaction.sh [FILES] [WORK_ITEMS] [RUNS]   (default 10000 files of 90000 work items' spans)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
source=$(generated_data "${2:-90000}")
out="benches/results/$(date +%F)-compaction.md"
.venv/bin/python3 benches/compaction.py "$binary" "$source" benches/data "${1:-10000}" "${3:-3}" | tee "$out"
echo "written to $out" >&2
