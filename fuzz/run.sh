#!/usr/bin/env bash
# Runs the fuzz targets with AFL++ (cargo-afl on the stable toolchain, Debian's afl++), one
# after another, each for SECONDS (default 600), from the seeds in fuzz/corpus/TARGET, and
# prints each run's executions, paths and crashes (afl-fuzz's fuzzer_stats). Crashes land in
# target/fuzz/TARGET/default/crashes: each becomes a regression seed in fuzz/corpus and a
# case in tests/fuzz_quick.rs.
#
#   fuzz/run.sh                    # every target, 10 minutes each
#   SECONDS_PER_TARGET=60 fuzz/run.sh http grpc
set -euo pipefail
cd "$(dirname "$0")"
seconds=${SECONDS_PER_TARGET:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config state_file http grpc admin)
command -v afl-fuzz >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends afl++; }
command -v cargo-afl >/dev/null 2>&1 || cargo install cargo-afl --locked
cargo afl config --build >/dev/null 2>&1 || true # builds AFL++'s Rust runtime once
# --cap-lints: cargo-afl builds with `--cfg fuzzing`, which turns on h2's own fuzz bridge,
# and vendor/h2 is a path dependency, so its `deny(missing_docs)` is not capped as a
# registry crate's would be.
RUSTFLAGS="${RUSTFLAGS:-} --cap-lints warn" cargo afl build --release --locked
out=../target/fuzz
mkdir -p "$out"
# In containers: no core pattern, no CPU frequency governor to check.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
for target in "${targets[@]}"; do
  rm -rf "$out/$target"
  echo "== $target: $seconds s"
  # -t: an input answered after 5 s is a hang (the drivers give up reading after 2 s).
  timeout --signal=INT "$((seconds + 30))" cargo afl fuzz -V "$seconds" -t 5000 \
    -i "corpus/$target" -o "$out/$target" "target/release/$target" >"$out/$target.log" 2>&1 || true
  stats="$out/$target/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    echo "   no stats: see $out/$target.log"; tail -20 "$out/$target.log"; exit 1
  fi
  awk -F' *: ' '/^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs) /{printf "   %-14s %s\n", $1, $2}' "$stats"
  crashes=$(awk -F' *: ' '/^saved_crashes /{print $2}' "$stats")
  if [ "${crashes:-0}" != "0" ]; then
    echo "   CRASHES in $out/$target/default/crashes"; exit 1
  fi
done
