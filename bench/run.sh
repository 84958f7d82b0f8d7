#!/usr/bin/env bash
# The same-run benchmark suite (see BENCHMARKS.md). Every scenario runs against every server in
# the same run, interleaved, for ROUNDS rounds; the summary reports medians and the ratios the
# targets are stated in. Server pinned to CPU 0, load generator to CPU 1.
#
#   bench/run.sh                  # full run (about 25 minutes)
#   ROUNDS=1 DURATION=2 bench/run.sh   # quick look
#   SECTIONS="fanout scale" bench/run.sh   # only some sections (check tls twin control probes fanout scale cold)
#   BASELINE=path/to/healthgate bench/run.sh  # an earlier build joins the check and fan-out
#                                 # sections as "healthgate-baseline" (before/after, same run)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}     # seconds of measured load per run (after 1 s warm-up)
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-16}      # concurrent streams per connection
NDEPS=${NDEPS:-10}          # healthgate's dependencies in the Check scenarios
RATE=${RATE:-60000}         # Check/s offered in the fixed-load latency scenario (all connections)
SECTIONS=${SECTIONS:-check tls twin control probes fanout scale cold}
WATCH_DEPS=${WATCH_DEPS:-1000}  # gRPC dependencies in the watch-versus-polled section
WATCH_FLIPS=${WATCH_FLIPS:-20}  # dependency flips timed per watch-versus-polled run
HANDSHAKES=${HANDSHAKES:-2000}  # sequential full TLS handshakes per handshake-cost run
FLIPS=${FLIPS:-20}          # status flips per Watch fan-out run
WATCHERS=${WATCHERS:-1000 10000}  # Watch fan-out sizes
SCALE_SECONDS=${SCALE_SECONDS:-20}  # measured seconds per engine-scale run (after 10 s warm-up)
BASELINE=${BASELINE:-}      # an earlier healthgate binary to compare with, same run
TWIN_SETTLE=${TWIN_SETTLE:-5}  # seconds between a twin server's start and its load
RELOAD_DEPS=${RELOAD_DEPS:-1000}  # dependencies in the config the control section reloads
RELOAD_PHASE=${RELOAD_PHASE:-3}  # seconds per quiet / reloading phase in the control section
RELOAD_CYCLES=${RELOAD_CYCLES:-5}  # quiet + reloading cycles per Check load there
work=target/bench
mkdir -p "$work"
# The summary reads every section's figures from these files: a section that does not run this
# time must not leave an earlier run's behind to be summarized as this run's.
rm -f "$work"/*.csv "$work/status_json.txt" "$work/summary.txt"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need h2load || ! need go || ! need openssl || [ ! -d /usr/share/gocode/src/google.golang.org/grpc/health ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client golang-go golang-google-grpc-dev openssl
fi

echo "== building"
cargo build --release --locked --bin healthgate --examples >/dev/null
(cd bench/grpc-go && GOPATH=/usr/share/gocode GO111MODULE=off go build -o "../../$work/grpc-go-health" .)
hg=target/release/healthgate
ex=target/release/examples

# `start` runs in a subshell (`read … < <(start …)`), so the processes it starts are recorded in
# a file for the exit trap to stop.
pidfile="$work/pids"
: >"$pidfile"
cleanup() { while read -r p; do kill "$p" 2>/dev/null || true; done <"$pidfile"; }
trap cleanup EXIT

# start NAME CPU CMD... : runs CMD pinned to CPU, waits for its "<kind> listening on ADDR" line
# (the first one; LISTEN=http waits for the "http listening on" line instead).
start() {
  local name=$1 cpu=$2 kind=${LISTEN:-[a-z]*}; shift 2
  taskset -c "$cpu" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  echo "$pid" >>"$pidfile"
  for _ in $(seq 200); do
    if grep -q "^$kind listening on" "$work/$name.out"; then
      echo "$pid $(sed -n "s/^$kind listening on //p" "$work/$name.out" | head -1)"
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
fanoutcsv="$work/fanout.csv"
scalecsv="$work/scale.csv"
coldcsv="$work/coldstart.csv"
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

# load ROUND SCENARIO SERVER PID ADDR BODY [H2LOAD OPTIONS...]: one row in LOAD_CSV (default
# results.csv).
load() {
  local round=$1 scenario=$2 server=$3 pid=$4 addr=$5 body=$6
  shift 6
  local log="$work/h2load-$round-$scenario-$server.log"
  rm -f "$log"  # h2load appends to its log file: an earlier run's requests would count again
  local before after
  before=$(cpu_ticks "$pid")
  local out
  out=$(taskset -c 1 h2load -D "$DURATION" --warm-up-time 1 -c "$CONNS" -m "$STREAMS" "$@" \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$body" --log-file "$log" \
    "${SCHEME:-http}://$addr/grpc.health.v1.Health/Check" 2>&1)
  after=$(cpu_ticks "$pid")
  local csv=${LOAD_CSV:-$results}
  python3 - "$round" "$scenario" "$server" "$log" "$((after - before))" "$tick_us" "$out" >>"$csv" <<'PY'
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
  tail -1 "$csv" | awk -F, '{printf "  %-9s %-20s %8s req/s  p50 %5s us  p99 %6s us  %6s us CPU/req\n", $2, $3, $4, $5, $6, $7}'
}

# nth_line FILE N SECONDS: line N of FILE once it is there (a background helper's output).
nth_line() {
  for _ in $(seq $(($3 * 20))); do
    if [ "$(wc -l <"$1")" -ge "$2" ]; then sed -n "$2p" "$1"; return; fi
    sleep 0.05
  done
  echo "no line $2 in $1 after $3 s: $(cat "$1" "${1%.out}.err" 2>/dev/null)" >&2
  exit 1
}

# kv LINE KEY: the value of KEY=… in a key=value line.
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

if section check; then
echo "round,scenario,server,rps,p50_us,p99_us,cpu_us_per_req,failed" >"$results"
servers=(healthgate tonic-health grpc-go h2-floor)
[ -n "$BASELINE" ] && servers+=(healthgate-baseline)
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  # Rotate the order each round so no server always runs first (or last).
  n=${#servers[@]}
  rotated=("${servers[@]:$(((round - 1) % n))}" "${servers[@]:0:$(((round - 1) % n))}")
  for server in "${rotated[@]}"; do
    case $server in
      healthgate) read -r pid addr < <(start "$server" 0 "$hg" serve --config "$work/healthy.toml") ;;
      healthgate-baseline) read -r pid addr < <(start "$server" 0 "$BASELINE" serve --config "$work/healthy.toml") ;;
      tonic-health) read -r pid addr < <(start "$server" 0 "$ex/tonic_health_peer" 127.0.0.1:0) ;;
      grpc-go) read -r pid addr < <(start "$server" 0 "$work/grpc-go-health" 127.0.0.1:0) ;;
      h2-floor) read -r pid addr < <(start "$server" 0 "$ex/h2_floor" 127.0.0.1:0) ;;
    esac
    sleep 1.5 # healthgate: first probe round done
    load "$round" overall "$server" "$pid" "$addr" "$work/overall.bin"
    load "$round" named "$server" "$pid" "$addr" "$work/named.bin"
    # Latency at the same offered load for every server (closed-loop p99 at saturation
    # compares servers running at different throughputs).
    load "$round" fixed "$server" "$pid" "$addr" "$work/overall.bin" --rps "$((RATE / CONNS))"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  for deps in hung flapping; do
    read -r pid addr < <(start "healthgate-$deps" 0 "$hg" serve --config "$work/$deps.toml")
    sleep 1.5
    load "$round" overall "healthgate-$deps" "$pid" "$addr" "$work/overall.bin"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  # The same server on a thread pool (two workers sharing the core) instead of one thread.
  for deps in healthy; do
    read -r pid addr < <(start "healthgate-pool" 0 "$hg" --worker-threads 2 serve --config "$work/$deps.toml")
    sleep 1.5
    load "$round" overall "healthgate-pool" "$pid" "$addr" "$work/overall.bin"
    load "$round" fixed "healthgate-pool" "$pid" "$addr" "$work/overall.bin" --rps "$((RATE / CONNS))"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
fi

if section tls; then
echo "== Check over TLS (ECDSA P-256, TLS 1.3, ALPN h2): healthgate vs tonic-health, same certificate"
tlscsv="$work/tls.csv"
handshakecsv="$work/handshake.csv"
echo "round,scenario,server,rps,p50_us,p99_us,cpu_us_per_req,failed" >"$tlscsv"
echo "round,server,handshakes,p50_us,p99_us,server_cpu_us_per_handshake" >"$handshakecsv"
pki="$work/tls"
mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 30 -subj "/CN=bench CA" 2>/dev/null
openssl req "${ec[@]}" -keyout "$pki/server.key" -out "$pki/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -out "$pki/server.pem" -days 30 -extfile "$pki/server.ext" 2>/dev/null
{ cat "$work/healthy.toml"; printf '[server.grpc_tls]\ncert_file = "%s"\nkey_file = "%s"\n' \
    "$PWD/$pki/server.pem" "$PWD/$pki/server.key"; } >"$work/healthy-tls.toml"
for round in $(seq "$ROUNDS"); do
  order=(healthgate-tls tonic-health-tls)
  [ $((round % 2)) -eq 0 ] && order=(tonic-health-tls healthgate-tls)
  for server in "${order[@]}"; do
    case $server in
      healthgate-tls) read -r pid addr < <(start "$server" 0 "$hg" serve --config "$work/healthy-tls.toml") ;;
      tonic-health-tls) read -r pid addr < <(start "$server" 0 "$ex/tonic_health_peer" 127.0.0.1:0 "$pki/server.pem" "$pki/server.key") ;;
    esac
    sleep 1.5
    SCHEME=https LOAD_CSV=$tlscsv load "$round" overall "$server" "$pid" "$addr" "$work/overall.bin"
    SCHEME=https LOAD_CSV=$tlscsv load "$round" fixed "$server" "$pid" "$addr" "$work/overall.bin" --rps "$((RATE / CONNS))"
    # The cost of a new connection: full handshakes, one after another.
    before=$(cpu_ticks "$pid")
    line=$(taskset -c 1 "$ex/tls_handshakes" "$addr" "$pki/ca.pem" "$HANDSHAKES")
    after=$(cpu_ticks "$pid")
    cpu=$(( (after - before) * tick_us / HANDSHAKES ))
    echo "$round,$server,$(kv "$line" handshakes),$(kv "$line" p50_us),$(kv "$line" p99_us),$cpu" >>"$handshakecsv"
    tail -1 "$handshakecsv" | awk -F, '{printf "  handshake %-16s p50 %5s us  p99 %6s us  server CPU %s us each\n", $2, $4, $5, $6}'
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
fi

if section twin; then
echo "== HTTP twin: GET /readyz over HTTP/1.1 keep-alive (h2load --h1), $CONNS connections"
twincsv="$work/twin.csv"
echo "round,server,rps,p50_us,p99_us,failed" >"$twincsv"
: >"$work/status_json.txt"
# Dependency processes of its own (the shared ones live through the other sections).
read -r twin_dep_pids_1 twin_dep_healthy < <(start twin-dep-healthy 1 "$ex/bench_dependency" 127.0.0.1:0 healthy)
read -r twin_dep_pids_2 twin_dep_hung < <(start twin-dep-hung 1 "$ex/bench_dependency" 127.0.0.1:0 hung)
config "$work/twin-healthy.toml" "$twin_dep_healthy"
config "$work/twin-hung.toml" "$twin_dep_hung"
for deps in healthy hung; do
  sed -i 's/^grpc_listen = .*/&\nhttp_listen = "127.0.0.1:0"/' "$work/twin-$deps.toml"
done
# http-floor-503: the floor answering what the hung twin answers (503 and a 351-byte body), to
# tell what a failing answer itself costs the connection and the load generator.
twin_servers=(twin-healthy twin-hung http-floor http-floor-503)
for round in $(seq "$ROUNDS"); do
  n=${#twin_servers[@]}
  rotated=("${twin_servers[@]:$(((round - 1) % n))}" "${twin_servers[@]:0:$(((round - 1) % n))}")
  for server in "${rotated[@]}"; do
    case $server in
      twin-healthy|twin-hung) read -r pid addr < <(LISTEN=http start "$server" 0 "$hg" serve --config "$work/$server.toml") ;;
      http-floor) read -r pid addr < <(LISTEN=http start "$server" 0 "$ex/http_floor" 127.0.0.1:0) ;;
      http-floor-503) read -r pid addr < <(LISTEN=http start "$server" 0 "$ex/http_floor" 127.0.0.1:0 503 351) ;;
    esac
    # Past the first probe rounds (the target is about steady state).
    sleep "$TWIN_SETTLE"
    log="$work/h2load-twin-$round-$server.log"
    rm -f "$log"
    out=$(taskset -c 1 h2load --h1 -D "$DURATION" --warm-up-time 1 -c "$CONNS" -m 1 --log-file "$log" \
      "http://$addr/readyz" 2>&1)
    python3 - "$round" "$server" "$log" "$out" >>"$twincsv" <<'PY'
import sys, re
round_, server, log, out = sys.argv[1:]
lat = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) >= 3)
rps = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", out).group(1))
failed = int(re.search(r"requests: .*?(\d+) failed", out).group(1))
n = len(lat)
p = lambda q: lat[min(n - 1, int(q * n))] if n else 0
print(f"{round_},{server},{rps:.0f},{p(0.5)},{p(0.99)},{failed}")
PY
    tail -1 "$twincsv" | awk -F, '{printf "  %-13s %8s req/s  p50 %5s us  p99 %6s us  failed %s\n", $2, $3, $4, $5, $6}'
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  line=$(taskset -c 0 "$ex/status_json" 1000)
  echo "  status page, 1,000 dependencies: $line"
  echo "$line" >>"$work/status_json.txt"
done
kill "$twin_dep_pids_1" "$twin_dep_pids_2" 2>/dev/null || true
fi

if section control; then
echo "== control plane: Check while a $RELOAD_DEPS-dependency config is reloaded once a second (SIGHUP); POST /push"
controlcsv="$work/control.csv"
reloadcsv="$work/reload.csv"
pushcsv="$work/push.csv"
echo "round,scenario,server,rps,p50_us,p99_us,cpu_us_per_req,failed" >"$controlcsv"
echo "round,deps,reloads,swap_ms_p50,swap_ms_max,kept_ok,replaced_ok,unchanged_intervals,early_probes,shortest_interval_ms,prepare_cpu_ms_p50,tables_parsed_later_max" >"$reloadcsv"
footprintcsv="$work/reload_footprint.csv"
echo "round,scenario,slow_after_signal_pct,slow_quiet_same_offsets_pct,excess_pct,p99_bound_ratio,aa_quiet_ratio" >"$footprintcsv"
echo "round,server,conns,rps,p50_us,p99_us,failed,non2xx" >"$pushcsv"
# reload_bench (CPU 1, with its 1,000 dependencies) runs healthgate on CPU 0 and alternates
# quiet and reloading phases of RELOAD_PHASE seconds (one reload a second in the latter); each
# Check load runs across RELOAD_CYCLES cycles and its requests are split by the phase they
# started in (alternating, because this machine's speed drifts more between two consecutive
# quiet phases than the 5 % the target resolves; see examples/reload_bench.rs).
cycle_seconds=$((2 * RELOAD_PHASE))
load_seconds=$((RELOAD_CYCLES * cycle_seconds))
for round in $(seq "$ROUNDS"); do
  out="$work/reload_bench-$round.out"
  # Two loads, each with 1 s of warm-up, plus a cycle of margin.
  taskset -c 1 "$ex/reload_bench" "$RELOAD_DEPS" "$RELOAD_PHASE" "$((2 * RELOAD_CYCLES + 2))" taskset -c 0 "$hg" \
    >"$out" 2>"$work/reload_bench.err" &
  bench_pid=$!
  echo "$bench_pid" >>"$pidfile"
  line=$(nth_line "$out" 1 120)
  pid=$(kv "$line" pid); addr=$(kv "$line" grpc)
  echo "$pid" >>"$pidfile"
  for scenario in saturated fixed; do
    rate=()
    [ "$scenario" = fixed ] && rate=(--rps "$((RATE / CONNS))")
    rm -f "$work/h2load-control-$round-$scenario.log"
    taskset -c 1 h2load -D "$load_seconds" --warm-up-time 1 -c "$CONNS" -m "$STREAMS" "${rate[@]}" \
      -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/overall.bin" \
      --log-file "$work/h2load-control-$round-$scenario.log" \
      "http://$addr/grpc.health.v1.Health/Check" >"$work/h2load-control-$round-$scenario.out" 2>&1
  done
  wait "$bench_pid" || { echo "reload_bench failed: $(cat "$work/reload_bench.err")" >&2; exit 1; }
  # Each load's requests, by the phase they started in: one row per phase into control.csv.
  for scenario in saturated fixed; do
    python3 - "$round" "$scenario" "$work/h2load-control-$round-$scenario.log" "$out" "$tick_us" >>"$controlcsv" <<'PY'
import bisect, sys
round_, scenario, log, phases_file, tick_us = sys.argv[1:]
reqs = []
for l in open(log):
    p = l.split()
    if len(p) >= 3:
        reqs.append((int(p[0]), int(p[1]), int(p[2])))
reqs.sort()
first, last = reqs[0][0], reqs[-1][0]
phases = []
for l in open(phases_file):
    p = l.split()
    if len(p) == 4 and p[0] in ("quiet", "reloading"):
        phases.append((int(p[1]), int(p[2]), p[0], int(p[3])))
phases.sort()
starts = [p[0] for p in phases]
by = {"quiet": [], "reloading": []}
failed = {"quiet": 0, "reloading": 0}
for t, status, d in reqs:
    i = bisect.bisect_right(starts, t) - 1
    if i < 0 or t >= phases[i][1]:
        continue
    name = phases[i][2]
    by[name].append(d)
    if status != 200:
        failed[name] += 1
for name in ("quiet", "reloading"):
    # Seconds of the phase inside the load's span; CPU from the phases wholly inside it.
    span = sum(max(0, min(e, last) - max(s, first)) for s, e, n, _ in phases if n == name) / 1e6
    whole = [(s, e, c) for s, e, n, c in phases if n == name and s >= first and e <= last]
    inside = sum(1 for t, _, _ in reqs if any(s <= t < e for s, e, _ in whole))
    ticks = sum(c for _, _, c in whole)
    lat = sorted(by[name])
    n = len(lat)
    p = lambda q: lat[min(n - 1, int(q * n))] if n else 0
    cpu = ticks * int(tick_us) / inside if inside else 0
    print(f"{round_},{scenario},{name},{n / span if span else 0:.0f},{p(0.5)},{p(0.99)},{cpu:.2f},{failed[name]}")
PY
    tail -2 "$controlcsv" | awk -F, '{printf "  %-9s %-9s %9s req/s  p50 %5s us  p99 %6s us  cpu %s us/req  failed %s\n", $2, $3, $4, $5, $6, $7, $8}'
    # The reloads' own footprint, which this machine's drift does not blur: requests started
    # in the first 100 ms of each second of a reloading phase (a reload is signalled at the
    # start of each second and swaps within 100 ms) slower than the quiet phases' p99,
    # against the same offsets of the quiet phases. Their excess, as a share of all requests,
    # moved to the tail, bounds the p99 the reloads cause: the quiet quantile at
    # 0.99 + excess over the quiet p99. And the noise floor of the pooled ratio: the p99 of
    # the odd quiet phases over that of the even ones (A/A).
    python3 - "$round" "$scenario" "$work/h2load-control-$round-$scenario.log" "$out" >>"$footprintcsv" <<'PY'
import bisect, sys
round_, scenario, log, phases_file = sys.argv[1:]
reqs = [(int(p[0]), int(p[2])) for p in (l.split() for l in open(log)) if len(p) >= 3]
phases = sorted((int(p[1]), int(p[2]), p[0]) for p in (l.split() for l in open(phases_file))
                if len(p) == 4 and p[0] in ("quiet", "reloading"))
starts = [p[0] for p in phases]
lat = {"quiet": [], "reloading": []}
early = {"quiet": [], "reloading": []}
window = {}
for t, d in reqs:
    i = bisect.bisect_right(starts, t) - 1
    if i < 0 or t >= phases[i][1]:
        continue
    name = phases[i][2]
    lat[name].append(d)
    window.setdefault(i, []).append(d)
    if (t - phases[i][0]) % 1_000_000 < 100_000:
        early[name].append(d)
quiet = sorted(lat["quiet"])
q = lambda sorted_, x: sorted_[min(len(sorted_) - 1, int(x * len(sorted_)))]
p99 = q(quiet, 0.99)
slow = lambda ds: 100 * sum(d > p99 for d in ds) / max(1, len(ds))
after, same = slow(early["reloading"]), slow(early["quiet"])
share = len(early["reloading"]) / max(1, len(lat["reloading"]))
excess = max(0.0, after - same) * share
bound = q(quiet, 0.99 + excess / 100) / p99
odd = sorted(d for k, i in enumerate(i for i in sorted(window) if phases[i][2] == "quiet") if k % 2 for d in window[i])
even = sorted(d for k, i in enumerate(i for i in sorted(window) if phases[i][2] == "quiet") if not k % 2 for d in window[i])
aa = q(odd, 0.99) / q(even, 0.99) if odd and even else 0
print(f"{round_},{scenario},{after:.2f},{same:.2f},{excess:.3f},{bound:.3f},{aa:.3f}")
PY
    tail -1 "$footprintcsv" | awk -F, '{printf "  %-9s reload footprint: %s%% slow in the 100 ms after a signal vs %s%% quiet; excess %s%% of all; p99 bound %s x; A/A of quiet phases %s x\n", $2, $3, $4, $5, $6, $7}'
  done
  line=$(nth_line "$out" 2 1)
  echo "$round,$(kv "$line" deps),$(kv "$line" reloads),$(kv "$line" swap_ms_p50),$(kv "$line" swap_ms_max),$(kv "$line" kept_ok),$(kv "$line" replaced_ok),$(kv "$line" unchanged_intervals),$(kv "$line" early_probes),$(kv "$line" shortest_interval_ms),$(kv "$line" prepare_cpu_ms_p50),$(kv "$line" tables_parsed_later_max)" >>"$reloadcsv"
  tail -1 "$reloadcsv" | awk -F, '{printf "  %s reloads of %s deps: signal to swap p50 %s ms max %s ms  kept ok %s  early re-probes %s of %s (shortest %s ms)  preparation CPU p50 %s ms, at most %s tables parsed after the first\n", $3, $2, $4, $5, $6, $9, $8, $10, $11, $12}'
  # POST /push/job (a heartbeat) over HTTP/1.1 keep-alive, without and with a state file (every
  # report written to disk, fsync'd, before it is answered).
  printf 'x' >"$work/push-body.bin"
  for server in push push-state; do
    {
      printf '[server]\ngrpc_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:0"\ndrain_delay = "0s"\n'
      [ "$server" = push-state ] && printf 'state_file = "push-state.json"\n'
      printf '\n[admin]\ntoken = "bench-admin-token"\n\n[dependencies.job]\nkind = "push"\nttl = "1h"\n'
    } >"$work/$server.toml"
    rm -f "$work/push-state.json"
    read -r pid addr < <(LISTEN=http start "$server" 0 "$hg" serve --config "$work/$server.toml")
    for conns in $CONNS 64; do
      log="$work/h2load-push-$round-$server-$conns.log"
      rm -f "$log"
      out=$(taskset -c 1 h2load --h1 -D "$DURATION" --warm-up-time 1 -c "$conns" -m 1 -d "$work/push-body.bin" \
        -H 'authorization: Bearer bench-admin-token' --log-file "$log" \
        "http://$addr/push/job?status=healthy" 2>&1)
      python3 - "$round" "$server" "$conns" "$log" "$out" >>"$pushcsv" <<'PY'
import sys, re
round_, server, conns, log, out = sys.argv[1:]
lat = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) >= 3)
rps = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", out).group(1))
failed = int(re.search(r"requests: .*?(\d+) failed", out).group(1))
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
non2xx = sum(int(codes.group(i)) for i in (2, 3, 4)) if codes else -1
n = len(lat)
p = lambda q: lat[min(n - 1, int(q * n))] if n else 0
print(f"{round_},{server},{conns},{rps:.0f},{p(0.5)},{p(0.99)},{failed},{non2xx}")
PY
      tail -1 "$pushcsv" | awk -F, '{printf "  POST /push %-10s c=%-3s %8s req/s  p50 %5s us  p99 %6s us  failed %s  non-2xx %s\n", $2, $3, $4, $5, $6, $7, $8}'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
fi

if section probes; then
echo "== gRPC dependencies by Watch vs polled every 5 s: $WATCH_DEPS dependencies (idle CPU, RSS), $WATCH_FLIPS flips to healthgate's Watch"
probescsv="$work/probes.csv"
echo "round,mode,deps,cpu_pct,rss_kib,flips,flip_ms_p50,flip_ms_p99,flip_ms_max" >"$probescsv"
for round in $(seq "$ROUNDS"); do
  for mode in watch background; do
    line=$(taskset -c 1 "$ex/watch_probe_bench" "$mode" "$WATCH_DEPS" "$SCALE_SECONDS" "$WATCH_FLIPS" taskset -c 0 "$hg")
    echo "$round,$(kv "$line" mode),$(kv "$line" deps),$(kv "$line" cpu_pct),$(kv "$line" rss_kib),$(kv "$line" flips),$(kv "$line" flip_ms_p50),$(kv "$line" flip_ms_p99),$(kv "$line" flip_ms_max)" >>"$probescsv"
    tail -1 "$probescsv" | awk -F, '{printf "  %-10s %s deps: CPU %5s %%  RSS %7s KiB  flip to Watch p50 %7s ms  p99 %7s ms  max %7s ms\n", $2, $3, $4, $5, $7, $8, $9}'
  done
done
fi

if section fanout; then
echo "== Watch fan-out: W streams on \"\" over W/100 connections, $FLIPS flips"
echo "round,watchers,server,converged,flips,bytes_per_watcher,cpu_us_per_msg,first_ms_p50,spread_ms_p50,spread_ms_p99,spread_ms_max" >"$fanoutcsv"
# healthgate's "" follows one dependency probed every 20 ms; SIGUSR1 to the dependency flips it.
# fall = 3: a probe that times out while the client's core is busy opening 10,000 streams must
# not flip the service by itself.
fanout_servers=(healthgate tonic-health grpc-go)
[ -n "$BASELINE" ] && fanout_servers+=(healthgate-baseline)
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  for watchers in $WATCHERS; do
    n=${#fanout_servers[@]}
    rotated=("${fanout_servers[@]:$(((round - 1) % n))}" "${fanout_servers[@]:0:$(((round - 1) % n))}")
    for server in "${rotated[@]}"; do
      dep_pid=
      case $server in
        healthgate|healthgate-baseline)
          bin=$hg
          [ "$server" = healthgate-baseline ] && bin=$BASELINE
          read -r dep_pid dep_addr < <(start dep-signal 1 "$ex/bench_dependency" 127.0.0.1:0 signal)
          printf '[server]\ngrpc_listen = "127.0.0.1:0"\ndrain_delay = "0s"\n\n[dependencies.flip]\nkind = "http"\nurl = "http://%s/flip"\ninterval = "20ms"\ntimeout = "19ms"\njitter = 0.0\nfall = 3\nrise = 1\n' \
            "$dep_addr" >"$work/fanout.toml"
          read -r pid addr < <(start "$server" 0 "$bin" serve --config "$work/fanout.toml")
          flipper=$dep_pid ;;
        tonic-health) read -r pid addr < <(start "$server" 0 "$ex/tonic_health_peer" 127.0.0.1:0); flipper=$pid ;;
        grpc-go) read -r pid addr < <(start "$server" 0 "$work/grpc-go-health" 127.0.0.1:0); flipper=$pid ;;
      esac
      sleep 0.5
      line=$(taskset -c 1 "$ex/watch_fanout" "$addr" "$watchers" "$((watchers / 100))" "$FLIPS" "$pid" "$flipper")
      echo "$round,$watchers,$server,$(kv "$line" converged),$FLIPS,$(kv "$line" bytes_per_watcher),$(kv "$line" cpu_us_per_msg),$(kv "$line" first_ms_p50),$(kv "$line" spread_ms_p50),$(kv "$line" spread_ms_p99),$(kv "$line" spread_ms_max)" >>"$fanoutcsv"
      tail -1 "$fanoutcsv" | awk -F, '{printf "  W=%-6s %-13s converged %s/%s  %6s B/watcher  %5s us CPU/msg  spread p50 %s ms p99 %s ms max %s ms\n", $2, $3, $4, $5, $6, $7, $9, $10, $11}'
      kill "$pid"; wait "$pid" 2>/dev/null || true
      if [ -n "$dep_pid" ]; then kill "$dep_pid"; wait "$dep_pid" 2>/dev/null || true; fi
    done
  done
done
fi

if section scale; then
echo "== engine scale: N HTTP dependencies every 1 s, ${SCALE_SECONDS} s measured after 10 s warm-up"
echo "round,deps,hosts,cpu_pct,rss_kib_start,rss_kib_end,fds,interval_ms_p1,interval_ms_p50,interval_ms_p99,interval_ms_max,probed,serving" >"$scalecsv"
for round in $(seq "$ROUNDS"); do
  for run in "0 one" "1000 one" "1000 distinct" "10000 one" "10000 distinct"; do
    read -r deps hosts <<<"$run"
    line=$(taskset -c 1 "$ex/engine_scale" "$deps" "$SCALE_SECONDS" "$hosts" taskset -c 0 "$hg")
    echo "$round,$deps,$hosts,$(kv "$line" cpu_pct),$(kv "$line" rss_kib_start),$(kv "$line" rss_kib_end),$(kv "$line" fds),$(kv "$line" interval_ms_p1),$(kv "$line" interval_ms_p50),$(kv "$line" interval_ms_p99),$(kv "$line" interval_ms_max),$(kv "$line" probed),$(kv "$line" serving)" >>"$scalecsv"
    tail -1 "$scalecsv" | awk -F, '{printf "  %5s deps %-8s  CPU %5s%%  RSS %s -> %s KiB  fds %s  interval p1 %s p99 %s max %s ms  serving %s\n", $2, $3, $4, $5, $6, $7, $8, $10, $11, $13}'
  done
done
fi

if section cold; then
echo "== cold start and idle RSS (5 trials each)"
echo "server,start_ms,rss_kib" >"$coldcsv"
# A port the kernel calls free (a random one may be the local end of one of the engine-scale
# run's 10,000 connections, still in TIME_WAIT).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
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
fi

echo "== summary (medians over $ROUNDS rounds)"
python3 bench/summary.py "$work" | tee "$work/summary.txt"
