#!/usr/bin/env bash
# The same-run benchmark suite (see BENCHMARKS.md). Every scenario runs against every server in
# the same run, interleaved, for ROUNDS rounds; the summary reports medians and the ratios the
# targets are stated in. Server pinned to CPU 0, load generator to CPU 1.
#
#   bench/run.sh                  # full run (about 5 minutes)
#   ROUNDS=1 DURATION=2 bench/run.sh   # quick look
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}     # seconds of measured load per run (after 1 s warm-up)
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-16}      # concurrent streams per connection
NDEPS=${NDEPS:-10}          # healthgate's dependencies in the Check scenarios
work=target/bench
mkdir -p "$work"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need h2load || ! need go || [ ! -d /usr/share/gocode/src/google.golang.org/grpc/health ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client golang-go golang-google-grpc-dev
fi

echo "== building"
cargo build --release --locked --bin healthgate --examples >/dev/null
(cd bench/grpc-go && GOPATH=/usr/share/gocode GO111MODULE=off go build -o "../../$work/grpc-go-health" .)
hg=target/release/healthgate
ex=target/release/examples

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CPU CMD... : runs CMD pinned to CPU, waits for its "<kind> listening on ADDR" line.
start() {
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 200); do
    if grep -q "listening on" "$work/$name.out"; then
      echo "$pid $(sed -n 's/^[a-z]* listening on //p' "$work/$name.out" | head -1)"
      return
    fi
    sleep 0.05
  done
  echo "server $name did not start: $(cat "$work/$name.err")" >&2
  exit 1
}

# Dependencies for healthgate: one process per mode answers every path.
read -r _ dep_healthy < <(start dep-healthy 1 "$ex/bench_dependency" 127.0.0.1:0 healthy)
read -r _ dep_hung < <(start dep-hung 1 "$ex/bench_dependency" 127.0.0.1:0 hung)
read -r _ dep_flapping < <(start dep-flapping 1 "$ex/bench_dependency" 127.0.0.1:0 flapping)

config() { # config FILE DEPENDENCY_ADDR
  {
    printf '[server]\ngrpc_listen = "127.0.0.1:0"\ndrain_delay = "0s"\n\n'
    printf '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n'
    for i in $(seq "$NDEPS"); do
      printf '[dependencies.dep-%s]\nkind = "http"\nurl = "http://%s/dep-%s"\n\n' "$i" "$2" "$i"
    done
    printf '[services.readiness]\ndependencies = { %s }\n\n[services.liveness]\n' \
      "$(seq -s, "$NDEPS" | sed 's/\([0-9]*\)/dep-\1 = "critical"/g; s/,/, /g')"
  } >"$1"
}
config "$work/healthy.toml" "$dep_healthy"
config "$work/hung.toml" "$dep_hung"
config "$work/flapping.toml" "$dep_flapping"

# gRPC request bodies: HealthCheckRequest{service: ""} and {service: "readiness"}, framed.
printf '\x00\x00\x00\x00\x00' >"$work/overall.bin"
printf '\x00\x00\x00\x00\x0b\x0a\x09readiness' >"$work/named.bin"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))

results="$work/results.csv"
echo "round,scenario,server,rps,p50_us,p99_us,cpu_us_per_req,failed" >"$results"

# load ROUND SCENARIO SERVER PID ADDR BODY
load() {
  local round=$1 scenario=$2 server=$3 pid=$4 addr=$5 body=$6
  local log="$work/h2load-$round-$scenario-$server.log"
  local before after
  before=$(cpu_ticks "$pid")
  local out
  out=$(taskset -c 1 h2load -D "$DURATION" --warm-up-time 1 -c "$CONNS" -m "$STREAMS" \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$body" --log-file "$log" \
    "http://$addr/grpc.health.v1.Health/Check" 2>&1)
  after=$(cpu_ticks "$pid")
  python3 - "$round" "$scenario" "$server" "$log" "$((after - before))" "$tick_us" "$out" >>"$results" <<'PY'
import sys, re
round_, scenario, server, log, ticks, tick_us, out = sys.argv[1:]
lat = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) >= 3)
rps = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", out).group(1))
failed = int(re.search(r"requests: .*?(\d+) failed", out).group(1))
n = len(lat)
p = lambda q: lat[min(n - 1, int(q * n))] if n else 0
cpu = int(ticks) * int(tick_us) / max(n, 1)
print(f"{round_},{scenario},{server},{rps:.0f},{p(0.5)},{p(0.99)},{cpu:.2f},{failed}")
PY
  tail -1 "$results" | awk -F, '{printf "  %-9s %-20s %8s req/s  p50 %5s us  p99 %6s us  %6s us CPU/req\n", $2, $3, $4, $5, $6, $7}'
}

servers=(healthgate tonic-health grpc-go h2-floor)
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  # Rotate the order each round so no server always runs first (or last).
  rotated=("${servers[@]:$(((round - 1) % 4))}" "${servers[@]:0:$(((round - 1) % 4))}")
  for server in "${rotated[@]}"; do
    case $server in
      healthgate) read -r pid addr < <(start "$server" 0 "$hg" serve --config "$work/healthy.toml") ;;
      tonic-health) read -r pid addr < <(start "$server" 0 "$ex/tonic_health_peer" 127.0.0.1:0) ;;
      grpc-go) read -r pid addr < <(start "$server" 0 "$work/grpc-go-health" 127.0.0.1:0) ;;
      h2-floor) read -r pid addr < <(start "$server" 0 "$ex/h2_floor" 127.0.0.1:0) ;;
    esac
    sleep 1.5 # healthgate: first probe round done
    load "$round" overall "$server" "$pid" "$addr" "$work/overall.bin"
    load "$round" named "$server" "$pid" "$addr" "$work/named.bin"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  for deps in hung flapping; do
    read -r pid addr < <(start "healthgate-$deps" 0 "$hg" serve --config "$work/$deps.toml")
    sleep 1.5
    load "$round" overall "healthgate-$deps" "$pid" "$addr" "$work/overall.bin"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done

echo "== cold start and idle RSS (5 trials each)"
coldcsv="$work/coldstart.csv"
echo "server,start_ms,rss_kib" >"$coldcsv"
port=$((40000 + RANDOM % 20000))
printf '[server]\ngrpc_listen = "127.0.0.1:%s"\n\n[services.liveness]\n' "$port" >"$work/empty.toml"
for trial in $(seq 5); do
  for server in healthgate tonic-health grpc-go; do
    case $server in
      healthgate) cmd=("$hg" serve --config "$work/empty.toml") ;;
      tonic-health) cmd=("$ex/tonic_health_peer" "127.0.0.1:$port") ;;
      grpc-go) cmd=("$work/grpc-go-health" "127.0.0.1:$port") ;;
    esac
    line=$(taskset -c 0 "$ex/cold_start" "$port" "${cmd[@]}")
    echo "$server,$(echo "$line" | sed 's/start_ms=//; s/ rss_kib=/,/')" >>"$coldcsv"
  done
done

echo "== summary (medians over $ROUNDS rounds)"
python3 bench/summary.py "$results" "$coldcsv" | tee "$work/summary.txt"
