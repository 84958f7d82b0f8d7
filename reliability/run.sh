#!/usr/bin/env bash
# The heavy reliability runs of RELIABILITY.md, one after another, at the sizes its figures
# were measured at (their quick versions are in `cargo test`). Each helper in examples/ serves
# or drives healthgate on loopback, prints its own `key=value` summary line and exits 1 when a
# promise did not hold; this script stops at the first that fails. Server on CPU 0, the
# helper (load, watchers, dependencies) on CPU 1, as in bench/run.sh.
#
#   reliability/run.sh                          # every run, full size (about 25 minutes)
#   RUNS="fault_matrix churn" reliability/run.sh
#   QUICK=1 reliability/run.sh                  # every run, small (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-fault_matrix soak churn drain_load}
QUICK=${QUICK:-}
size() { if [ -n "$QUICK" ]; then echo "$2"; else echo "$1"; fi; }

examples=()
for run in $RUNS; do
  case $run in
    fault_matrix | soak | churn | drain_load) examples+=(--example "$run") ;;
    *) echo "unknown run: $run (fault_matrix soak churn drain_load)" >&2; exit 1 ;;
  esac
done
cargo build --release --locked --bin healthgate "${examples[@]}"
hg=target/release/healthgate
ex=target/release/examples
server=(taskset -c 0 "$hg")

for run in $RUNS; do
  echo "== $run"
  case $run in
    # 16 faulty dependencies probed every 200 ms; /status.json read once a second.
    fault_matrix) taskset -c 1 "$ex/fault_matrix" "$(size 600 30)" "${server[@]}" ;;
    # WATCHERS Watch streams, one dependency flip per second for SECONDS.
    soak) taskset -c 1 "$ex/soak" "$(size 10000 1000)" "$(size 600 60)" "${server[@]}" ;;
    # CYCLES connect/Check/close, WATCHES Watch + Detail.Watch open/cancel.
    churn) taskset -c 1 "$ex/churn" "$(size 100000 10000)" "$(size 10000 1000)" "${server[@]}" ;;
    # SIGTERM at thousands of Check/s with WATCHERS open (LOADERS Check connections).
    drain_load) taskset -c 1 "$ex/drain_load" "$(size 10000 1000)" 8 "${server[@]}" ;;
  esac
done
echo "every reliability run held"
