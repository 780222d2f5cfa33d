#!/usr/bin/env bash
# Throughput against a slow provider, swept over the ceiling: the simulator
# answers after LATENCY (default 50ms), the gateway may hold M requests in
# flight (`daemon.max_in_flight`, spread over 4 connections), so no sender can
# do better than M / LATENCY. For each M this runs fan-out jobs of 500 and
# h2load with the same 4 connections x M/4 streams against the same
# simulator, and prints the gateway's share of the ceiling, h2load's, and the
# CPU the gateway and the simulator used (on 2 cores, the last points are
# where the machine, not the ceiling, sets the pace).
#
#   bash loadtest/scripts/sweep-latency.sh [LATENCY_MS] [M...]
#   bash loadtest/scripts/sweep-latency.sh 50 200 400 1000 2000 4000
set -euo pipefail
cd "$(dirname "$0")/../.."
latency=${1:-50}; shift || true
points=("$@")
[ ${#points[@]} -gt 0 ] || points=(200 400 1000 2000 4000)
lt=./target/release/loadtest
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| max in flight (4 x streams) | ceiling /s | gateway /s (of ceiling) | h2load req/s (of ceiling) | gateway / h2load | gateway CPU | simulator CPU |"
echo "|---|---|---|---|---|---|---|"
for m in "${points[@]}"; do
  ceiling=$((m * 1000 / latency))
  # About 10 s of fan-out at the ceiling (at least 40 jobs), 6 s of h2load.
  jobs=$((ceiling * 10 / 500)); [ "$jobs" -ge 40 ] || jobs=40
  $lt run --realtime --preload --jobs "$jobs" --recipients 500 --prefetch 32 \
    --latency "${latency}ms" --max-in-flight "$m" --streams $((m / 4)) \
    --baselines h2load --h2load-requests $((ceiling * 6)) --report "$out/r.md" >/dev/null 2>&1 || true
  r=$out/r.md
  rate=$(grep -oP 'notifications/s \(end.*\*\*\K[0-9,]+' "$r" | tr -d , || echo 0)
  h2=$(grep -oP '^\| h2load[^|]*\| \K[0-9,]+' "$r" | tr -d , || echo 0)
  gw_cpu=$(grep -oP '^\| gateway CPU \| \K[0-9.]+' "$r" || echo n/a)
  sim_cpu=$(grep -oP 'simulator / loadtest CPU \| [0-9.]+ cores / \K[0-9.]+' "$r" || echo n/a)
  awk -v m="$m" -v c="$ceiling" -v g="$rate" -v h="$h2" -v gc="$gw_cpu" -v sc="$sim_cpu" 'BEGIN {
    printf "| %d | %d | %d (%.0f%%) | %d (%.0f%%) | %.2f | %s | %s |\n",
      m, c, g, 100 * g / c, h, 100 * h / c, (h > 0 ? g / h : 0), gc, sc }'
done
