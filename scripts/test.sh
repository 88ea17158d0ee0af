#!/usr/bin/env bash
# Runs every test on a fresh machine. Installs what the tests need (a SeaweedFS S3 server and
# DuckDB, pinned in scripts/requirements-test.txt) into .venv, then checks formatting and lints
# and runs the Rust test suites, which start and stop their own servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=scripts/requirements-test.txt
if [ ! -x .venv/bin/python3 ] || ! cmp -s "$requirements" .venv/requirements.installed; then
  echo "setting up .venv from $requirements" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" .venv/requirements.installed
fi
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
