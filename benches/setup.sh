# Sourced by the benchmark scripts: the test venvs, a release build of tokenledger (and the Flight streaming bench) in $binary,
# and `generated_data WORK_ITEMS`, which prints the directory of a `gen --seed 42` data set of that
# size, generating it on first use (benches/data/ is not committed).
scripts/test.sh --venv-only
# GNU time, for peak memory per report (a child's own figure: `wait4` from the harness would
# count the harness's memory, which a forked child starts with).
if [ ! -x /usr/bin/time ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q time >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q time >/dev/null; }
fi
# Built as a bench target builds it (release, with the dev-dependencies' features), so this and
# `cargo bench` share one build instead of rebuilding each other's.
cargo bench --locked --no-run --bench flight_streaming
binary="${CARGO_TARGET_DIR:-target}/release/tokenledger"
mkdir -p benches/results

generated_data() {
  local data="benches/data/gen-$1"
  [ -d "$data/spans" ] || "$binary" gen --out "$data" --work-items "$1" --seed 42 >&2
  echo "$data"
}
