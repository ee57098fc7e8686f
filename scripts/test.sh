#!/usr/bin/env bash
# The project's test command: the Rust workspace's tests, then the deploy/ and dashboards/ checks
# (Helm chart, manifests, alerts, bootstrap, and the dashboards against a real Prometheus), which
# run with Python tools installed from PyPI into .venv-deploy. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Both halves run even when the first fails, so one run reports everything; the exit code is nonzero
# if either failed.
# Every test that skips (tests/common::skip, conftest.skip_or_fail) appends "SKIP <test>: <why>" here;
# the list ends the output, so a run on a host without root, cgroup v1 or a tool says what it missed.
skip_log="$(mktemp -t kepler-rs-skips.XXXXXX)"
trap 'rm -f "$skip_log"' EXIT
export KEPLER_RS_SKIP_LOG="$skip_log"
cargo_status=0
cargo test --workspace --no-fail-fast || cargo_status=$?

venv=.venv-deploy
if [ ! -x "$venv/bin/python" ] || ! cmp -s deploy/tests/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r deploy/tests/requirements.txt
  cp deploy/tests/requirements.txt "$venv/requirements.txt"
fi
# The dashboard test runs the exporter that `cargo test` just built.
export KEPLER_RS_BIN="${KEPLER_RS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/kepler-rs}"
pytest_status=0
"$venv/bin/python" -m pytest -c deploy/tests/pytest.ini deploy/tests "$@" || pytest_status=$?
skips="$(sort -u "$skip_log")"
if [ -n "$skips" ]; then
  echo "scripts/test.sh: $(printf '%s\n' "$skips" | wc -l) tests skipped (README.md, \"What the full suite needs\"):" >&2
  printf '%s\n' "$skips" >&2
else
  echo "scripts/test.sh: no test skipped" >&2
fi
if [ "$cargo_status" != 0 ] || [ "$pytest_status" != 0 ]; then
  echo "scripts/test.sh: cargo test exit $cargo_status, pytest exit $pytest_status" >&2
  exit 1
fi
