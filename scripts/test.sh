#!/usr/bin/env bash
# Runs every test on a fresh machine. Installs what the tests need into venvs from pinned
# requirements files: .venv (a SeaweedFS S3 server, DuckDB, pyarrow, the ADBC Flight SQL driver,
# pytest), .venv-dbapi (flightsql-dbapi, which cannot share a venv with the rest), .venv-delta
# (DuckDB's Delta reader), .venv-focus (the FOCUS validator), .venv-prices (genai-prices) and one
# .venv-otlp-* per OpenTelemetry instrumentation the OTLP receiver is tested with. Then checks
# formatting and lints and runs the Rust test suites, which start and stop their own servers on
# 127.0.0.1 and run the Python client tests in tests/python/ against them. Last, checks that the
# main command's build reuses the test build's dependencies.
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
# DuckDB 1.4.4 with its delta extension: an independent reader of the curated Delta tables.
setup_venv .venv-delta scripts/requirements-delta.txt
# The FinOps Foundation's FOCUS validator, for the FOCUS export.
setup_venv .venv-focus scripts/requirements-focus.txt
# pydantic's genai-prices: the independent oracle token_cost is checked against.
setup_venv .venv-prices scripts/requirements-prices.txt
# An LLM app (openai-python, anthropic-python) under each OTLP instrumentation the receiver maps,
# one venv each.
for instrumentation in openai-v2 traceloop openinference langfuse anthropic-openllmetry anthropic-openinference; do
  setup_venv ".venv-otlp-$instrumentation" "scripts/requirements-otlp-$instrumentation.txt"
done
# A real browser for the report page's test: Debian's chromium and its chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver from Debian's packages" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
# Benchmarks reuse the venvs without running the tests.
[ "${1:-}" = "--venv-only" ] && exit 0
export PATH="$PWD/.venv/bin:$PATH"
# The peers were installed above: a test that cannot find one fails instead of skipping.
export TOKENLEDGER_REQUIRE_PEERS=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every public item documented, every doc link resolving (docs/architecture.md points into them).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked

# The README's main command must reuse this build, not compile the dependencies again: a
# dev-dependency that switches on a feature of a shared crate would make `cargo build` (the
# main command's build) compile DataFusion a second time. See the comment on serde in Cargo.toml.
rebuilt=$(cargo build --locked --offline 2>&1 | grep -E '^ *Compiling ' | grep -v ' (/' || true)
if [ -n "$rebuilt" ]; then
  echo "cargo build compiled dependencies the test build had already compiled (features differ between the two builds; align them in Cargo.toml):" >&2
  echo "$rebuilt" >&2
  exit 1
fi
echo "cargo build after the tests: no dependency compiled again"
