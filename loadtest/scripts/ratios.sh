#!/usr/bin/env bash
# The same `loadtest run` N times in a row: each run measures the gateway
# and its baselines one after the other, so on a machine whose speed drifts
# one run's ratio can be off; this prints every run's ratios and the median.
#
#   bash loadtest/scripts/ratios.sh N [loadtest run arguments...]
#   bash loadtest/scripts/ratios.sh 5 --realtime --preload --jobs 1000 --recipients 500 \
#       --prefetch 16 --baselines node-apn --peer-requests 50000
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=$1; shift
lt=./target/release/loadtest
declare -A ratios
echo "| run | gateway notifications/s | baseline: rate (gateway / baseline) |"
echo "|---|---|---|"
for i in $(seq "$runs"); do
  out=$($lt run "$@" 2>/dev/null)
  rate=$(grep -oP 'notifications/s.*\*\*\K[0-9,]+' <<<"$out" || echo "n/a")
  cells=""
  # Baseline rows: | name (details) | rate | ratio | command |
  while IFS='|' read -r _ name value ratio _; do
    name=$(sed -E 's/ \(.*//; s/^ +| +$//g' <<<"$name")
    ratio=$(tr -d ' ' <<<"$ratio")
    [[ $ratio =~ ^[0-9.]+$ ]] || continue
    cells+="$name: $(sed -E 's/^ +| +$//g' <<<"$value") ($ratio); "
    ratios[$name]+="$ratio "
  done < <(sed -n '/| baseline (same run)/,/^$/p' <<<"$out" | tail -n +3)
  echo "| $i | $rate | $cells |"
done
echo
for name in "${!ratios[@]}"; do
  median=$(tr ' ' '\n' <<<"${ratios[$name]}" | grep -v '^$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  echo "median gateway / $name over $runs runs: $median (each: ${ratios[$name]})"
done
