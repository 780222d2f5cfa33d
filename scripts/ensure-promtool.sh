#!/usr/bin/env bash
# Makes sure `promtool` (Prometheus's checker, Debian package `prometheus`) is on PATH:
# the telemetry tests check the /metrics exposition and the alert rules with it.
# Installs the package when running as root with apt-get, otherwise says what to run.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "promtool: $(command -v promtool)"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "promtool is missing: installing Debian's prometheus package (for promtool only; the server is not started)..."
  # policy-rc.d keeps the package from starting a Prometheus server (port 9090,
  # the admin default).
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null 2>&1 || true
  if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
  command -v promtool >/dev/null 2>&1 && { echo "promtool: $(command -v promtool)"; exit 0; }
fi
echo "error: promtool is not installed; the telemetry tests need it." >&2
echo "       Install it (Debian/Ubuntu: 'sudo apt-get install prometheus') or put promtool on PATH." >&2
exit 1
