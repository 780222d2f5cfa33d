#!/usr/bin/env bash
# Checks the deployment files offline: the Dockerfile (hadolint, and what can
# be checked without a Docker engine), the kustomize overlays (rendered with
# `kubectl kustomize`, validated against the Kubernetes and CRD schemas, and
# the invariants in deploy/tests), the YAML (yamllint) and the alert rules
# (promtool check + unit tests, PrometheusRule in sync).
# Installs the pinned Python tools and promtool when missing, or says what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The command the Dockerfile builds with. CI does not run it: CI starts from a
# fresh clone, and a cold release build took 33 min on this 2-core machine
# under other builds' load (6.5 min of CPU); see docs/operations.md. It checks
# that the Dockerfile names it and that the lock file is current for --locked.
# CHECK_DEPLOY_RELEASE_BUILD=1 runs it too.
BUILD_COMMAND="cargo build --release --locked --bin pushgate"

fail() { echo "error: $*" >&2; exit 1; }
is_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

# --- tools -------------------------------------------------------------------
REQS=deploy/tests/requirements.txt
if ! python3 - "$REQS" <<'PY'
import importlib.metadata as m, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        try:
            if m.version(name) != version:
                sys.exit(1)
        except m.PackageNotFoundError:
            sys.exit(1)
PY
then
  echo "Installing the deploy check tools ($REQS)..."
  python3 -m pip install --quiet --disable-pip-version-check -r "$REQS" \
    || fail "python3 -m pip install -r $REQS failed; the deploy checks need these packages."
fi

if ! kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[45]'; then
  if is_root_with_apt; then
    echo "kubectl (with kustomize) is missing: trying apt-get install kubectl..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl) >/dev/null 2>&1 || true
  fi
  kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[45]' \
    || fail "kubectl with kustomize v4+ is needed to render deploy/k8s (install kubectl >= 1.21)."
fi

bash scripts/ensure-promtool.sh >/dev/null

# --- checks ------------------------------------------------------------------
echo "deploy: Dockerfile"
grep -qF "$BUILD_COMMAND" Dockerfile || fail "the Dockerfile does not run: $BUILD_COMMAND"
cargo metadata --locked --format-version 1 >/dev/null \
  || fail "Cargo.lock is not current: the Dockerfile's --locked build would fail"
hadolint Dockerfile
if [ "${CHECK_DEPLOY_RELEASE_BUILD:-0}" = 1 ]; then
  echo "deploy: $BUILD_COMMAND (CHECK_DEPLOY_RELEASE_BUILD=1)"
  $BUILD_COMMAND
fi

echo "deploy: yamllint"
yamllint --strict -c deploy/.yamllint.yml deploy/k8s deploy/prometheus deploy/.yamllint.yml

echo "deploy: alert rules"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
python3 deploy/tools/gen_prometheusrule.py --check

echo "deploy: manifests (kustomize render, schemas, invariants)"
python3 -m pytest -q -p no:cacheprovider deploy/tests
