#!/usr/bin/env bash
# The project's test command: the Rust workspace's tests, then the deploy/ and dashboards/ checks
# (Helm chart, manifests, alerts, bootstrap, and the dashboards against a real Prometheus), which
# run with Python tools installed from PyPI into .venv-deploy. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace

venv=.venv-deploy
if [ ! -x "$venv/bin/python" ] || ! cmp -s deploy/tests/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r deploy/tests/requirements.txt
  cp deploy/tests/requirements.txt "$venv/requirements.txt"
fi
# The dashboard test runs the exporter that `cargo test` just built.
export KEPLER_RS_BIN="${KEPLER_RS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/kepler-rs}"
"$venv/bin/python" -m pytest -c deploy/tests/pytest.ini deploy/tests "$@"
