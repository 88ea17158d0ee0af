#!/usr/bin/env bash
# Report page load time: a release `serve` over a data set, the page requested again and again.
# Usage: benches/page.sh [DATA] [RUNS]   (default testdata/sample, 20 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/setup.sh
exec .venv/bin/python3 benches/page.py "$binary" "${1:-testdata/sample}" "${2:-20}"
