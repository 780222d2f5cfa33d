#!/usr/bin/env bash
# The one test command: makes sure what the tests need is there (RabbitMQ), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-rabbitmq.sh
# The telemetry tests check /metrics and the alert rules with promtool.
bash scripts/ensure-promtool.sh
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

# The Web Push interop test decrypts with a second implementation (PyPI http-ece).
if ! python3 -c 'import http_ece' 2>/dev/null; then
  echo "Installing the PyPI package http-ece (Web Push interop test)..."
  python3 -m pip install --quiet http-ece==1.2.1 || {
    echo "error: python3 -m pip install http-ece==1.2.1 failed; the Web Push interop test needs it." >&2
    exit 1
  }
fi

# Deployment files: Dockerfile, kustomize overlays, alert rules (offline; installs its tools).
bash scripts/check-deploy.sh

cargo test --workspace --all-targets "$@"
# Doc tests are not covered by --all-targets.
cargo test --workspace --doc "$@"
