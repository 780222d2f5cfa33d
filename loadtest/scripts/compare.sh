#!/usr/bin/env bash
# Before/after: the same scenarios against several pushgate binaries, one
# shared simulator (so that only the gateway differs), runs interleaved.
#
#   bash loadtest/scripts/compare.sh ROUNDS BIN... > compare.md
#
# Each BIN is a pushgate binary (build one per commit with
# `git checkout <commit> -- src && cargo build --release -p pushgate`).
# SCENARIOS replaces the two default scenarios: `name args...` entries
# separated by `;`, e.g.
#   SCENARIOS="single --jobs 60000 --recipients 1 --prefetch 256 --gateway-threads 1" \
#     bash loadtest/scripts/compare.sh 6 /tmp/pg-before /tmp/pg-after
# SIM_THREADS=1 runs the shared simulator on one runtime thread (the
# cheaper stand-in at zero latency, docs/benchmarks.md round 6).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=$1; shift
lt=./target/release/loadtest
sim_bin=./target/release/pushgate
port=$((20000 + RANDOM % 20000))
chrt -r 10 "$sim_bin" ${SIM_THREADS:+--threads "$SIM_THREADS"} simulate --accept-all --apns-addr 127.0.0.1:$port \
  --fcm-addr 127.0.0.1:0 --webpush-addr 127.0.0.1:0 > /dev/null 2>&1 &
sim=$!
trap 'kill $sim' EXIT
sleep 1
echo "| binary | scenario | notifications/s | gateway CPU (cores) | gateway µs CPU per notification | RSS peak |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  for bin in "$@"; do
    IFS=';' read -ra scenarios <<<"${SCENARIOS:-fanout --jobs 400 --recipients 500 --prefetch 16;single --jobs 50000 --recipients 1 --prefetch 256}"
    for scenario in "${scenarios[@]}"; do
      scenario=$(sed -E 's/^ +| +$//g' <<<"$scenario")
      name=${scenario%% *}; args=${scenario#* }
      out=$($lt run --realtime --preload --baselines none --pushgate "$bin" \
              --sim-addr 127.0.0.1:$port --sim-pid $sim $args 2>/dev/null)
      rate=$(grep -oP 'notifications/s.*\*\*\K[0-9,]+' <<<"$out" | tr -d ,)
      cpu=$(grep -oP '\| gateway CPU \| \K[0-9.]+' <<<"$out")
      rss=$(grep -oP 'RSS peak / at the end \| \K[0-9.]+ MB' <<<"$out")
      us=$(awk -v c="$cpu" -v r="$rate" 'BEGIN { if (r > 0) printf "%.1f", c * 1e6 / r }')
      echo "| $(basename "$bin") | $name | $rate | $cpu | $us | $rss |"
    done
  done
done
