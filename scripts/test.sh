#!/usr/bin/env bash
# Runs every test on a fresh machine. Installs what the tests need into two venvs from pinned
# requirements files: .venv (a SeaweedFS S3 server, DuckDB, pyarrow, the ADBC Flight SQL driver,
# pytest) and .venv-dbapi (flightsql-dbapi, which cannot share a venv with the rest). Then checks
# formatting and lints and runs the Rust test suites, which start and stop their own servers on
# 127.0.0.1 and run the Python client tests in tests/python/ against them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Creates (or refreshes, when its requirements file changed) the venv DIR from REQUIREMENTS.
setup_venv() {
  local dir=$1 requirements=$2
  if [ ! -x "$dir/bin/python3" ] || ! cmp -s "$requirements" "$dir/requirements.installed"; then
    echo "setting up $dir from $requirements" >&2
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$dir/requirements.installed"
  fi
}
setup_venv .venv scripts/requirements-test.txt
setup_venv .venv-dbapi scripts/requirements-dbapi.txt
# Benchmarks reuse the venvs without running the tests.
[ "${1:-}" = "--venv-only" ] && exit 0
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
