#!/usr/bin/env bash
# Interop suite: drives a built healthgate with Python's grpcio clients. Creates its own venv.
# Usage: tests/interop/run.sh [path/to/healthgate]   (default: target/debug/healthgate)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/debug/healthgate}"
venv=target/interop-venv
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-health-checking grpcio-reflection pytest
fi
[ -x "$bin" ] || cargo build --locked
HEALTHGATE_BIN="$bin" "$venv/bin/pytest" -q -p no:cacheprovider tests/interop
