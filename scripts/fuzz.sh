#!/usr/bin/env bash
# Fuzz every parser of outside input (the targets in fuzz/) for a bounded time each, starting
# from the committed seed corpus (results: benches/README.md, "Fuzzing"). Installs cargo-fuzz and
# the nightly toolchain when missing. A crash fails the script; its input is left in
# fuzz/artifacts/<target>/.
#   KEPLER_RS_FUZZ_SECONDS  seconds per target (default 20)
#   KEPLER_RS_FUZZ_TARGETS  space-separated targets to run (default: all)
#   KEPLER_RS_FUZZ_SEED     libFuzzer's -seed (default 1: CI replays the same mutations each run, so
#                           a red run is a regression, reproducible here; 0 draws a new seed, for
#                           the longer exploratory runs that look for new findings)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${KEPLER_RS_FUZZ_SECONDS:-20}"
seed="${KEPLER_RS_FUZZ_SEED:-1}"
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# Debug assertions on (-a): an arithmetic overflow on odd input is a finding too.
cargo +nightly fuzz build -a
targets="${KEPLER_RS_FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
failed=""
for target in $targets; do
  # New inputs go to a scratch directory (the first one named), so the seeds stay as committed.
  scratch="$(mktemp -d -t "kepler-rs-fuzz-$target.XXXXXX")"
  echo "scripts/fuzz.sh: $target for ${seconds}s" >&2
  if ! cargo +nightly fuzz run -a "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -seed="$seed" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>"$scratch.log"; then
    failed="$failed $target"
    tail -n 40 "$scratch.log" >&2
  else
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch.log" | sed "s/^/  $target /" >&2 || true
  fi
  rm -rf "$scratch" "$scratch.log"
done
if [ -n "$failed" ]; then
  echo "scripts/fuzz.sh: crashes in:$failed (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "scripts/fuzz.sh: no crash in any target" >&2
