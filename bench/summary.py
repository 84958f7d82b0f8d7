"""Summarises bench/run.sh results: medians per scenario and server over the rounds, and the
issue's targets as same-run ratios, each marked PASS or MISS."""

import csv
import statistics
import sys
from collections import defaultdict

results, coldstart = sys.argv[1], sys.argv[2]
PEERS = ["tonic-health", "grpc-go"]

runs = defaultdict(list)
for row in csv.DictReader(open(results)):
    runs[(row["scenario"], row["server"])].append(row)


def med(scenario, server, field):
    values = [float(r[field]) for r in runs.get((scenario, server), [])]
    return statistics.median(values) if values else float("nan")


print(f"{'scenario':9} {'server':20} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>10} {'failed':>6}")
for (scenario, server) in sorted(runs):
    failed = sum(int(r["failed"]) for r in runs[(scenario, server)])
    print(f"{scenario:9} {server:20} {med(scenario, server, 'rps'):9.0f} {med(scenario, server, 'p50_us'):8.0f} "
          f"{med(scenario, server, 'p99_us'):8.0f} {med(scenario, server, 'cpu_us_per_req'):10.2f} {failed:6d}")

checks = []


def target(name, value, limit, ok):
    checks.append((name, value, limit, "PASS" if ok else "MISS"))


for scenario in ["overall", "named"]:
    hg_rps = med(scenario, "healthgate", "rps")
    best_rps = max(med(scenario, p, "rps") for p in PEERS)
    floor = med(scenario, "h2-floor", "rps")
    best_p99 = min(med(scenario, p, "p99_us") for p in PEERS)
    hg_p99 = med(scenario, "healthgate", "p99_us")
    target(f"{scenario}: Check/s vs best peer", hg_rps / best_rps, ">= 1.05", hg_rps >= 1.05 * best_rps)
    target(f"{scenario}: Check/s vs HTTP/2 floor", hg_rps / floor, ">= 0.75", hg_rps >= 0.75 * floor)
    target(f"{scenario}: p99 vs best peer", hg_p99 / best_p99, "<= 1.10", hg_p99 <= 1.10 * best_p99)

hung = med("overall", "healthgate-hung", "p99_us") / med("overall", "healthgate", "p99_us")
target("p99 with every dependency hung vs healthy", hung, "<= 1.05", hung <= 1.05)
flap = med("overall", "healthgate-flapping", "p99_us") / med("overall", "healthgate", "p99_us")
checks.append(("p99 with dependencies flapping vs healthy (reported)", flap, "-", "-"))

cold = defaultdict(list)
for row in csv.DictReader(open(coldstart)):
    cold[row["server"]].append(row)
print()
print(f"{'server':14} {'start ms':>9} {'idle RSS KiB':>13}   (medians of {len(cold['healthgate'])} trials)")
for server, rows in sorted(cold.items()):
    print(f"{server:14} {statistics.median(float(r['start_ms']) for r in rows):9.2f} "
          f"{statistics.median(float(r['rss_kib']) for r in rows):13.0f}")
hg_start = statistics.median(float(r["start_ms"]) for r in cold["healthgate"])
hg_rss = statistics.median(float(r["rss_kib"]) for r in cold["healthgate"])
target("cold start to first SERVING (ms)", hg_start, "<= 20", hg_start <= 20)
target("idle RSS (MiB)", hg_rss / 1024, "<= 10", hg_rss <= 10 * 1024)

print()
for name, value, limit, verdict in checks:
    print(f"{verdict:4}  {name:52} {value:8.3f}  (target {limit})")
