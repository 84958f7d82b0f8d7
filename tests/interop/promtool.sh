#!/usr/bin/env bash
# Scrapes a running healthgate (the demo, after a few RPCs) and lints it with promtool.
# Usage: tests/interop/promtool.sh [path/to/healthgate]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/debug/healthgate}"
out=$(mktemp)
"$bin" demo --phase 1s --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$out" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do
  grep -q "^http listening on " "$out" && break
  sleep 0.1
done
grpc=$(sed -n 's/^grpc listening on //p' "$out")
http=$(sed -n 's/^http listening on //p' "$out")
[ -n "$grpc" ] && [ -n "$http" ] || { echo "demo did not start: $(cat "$out")" >&2; exit 1; }
sleep 3 # a few probe rounds and transitions
"$bin" check --addr "$grpc" >/dev/null 2>&1 || true
"$bin" check --addr "$grpc" --service nope >/dev/null 2>&1 || true
metrics=$(curl -fsS "http://$http/metrics")
echo "$metrics" | promtool check metrics
echo "promtool: $(echo "$metrics" | grep -c '^healthgate_') healthgate series, no problems"
