#!/usr/bin/env bash
# Checks the Helm chart in helm/tokend without a cluster or a helm binary: lint, render, validate
# the manifests for the Kubernetes versions the chart claims, negative schema tests, and a run of
# the tokend binary ($TOKEND_BIN, default target/debug/tokend) on the rendered ConfigMap/Secrets.
# Idempotent: the Python tools live in target/chart-venv (created once, reused).
# Usage: scripts/chart-check.sh            (from anywhere; exit 0 only if every check passed)
#        TOKEND_BIN=target/release/tokend scripts/chart-check.sh
#        CHART_CHECK_SKIP_RUNTIME=1 scripts/chart-check.sh   (no binary: steps 1-3 only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/target/chart-venv"
# Pinned: helm-python-sdk embeds Helm v4; kubernetes-validate 1.37 bundles schemas for Kubernetes 1.25-1.37.
REQS=(
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "pyyaml==6.0.3"
  "grpcio==1.85.1"
  "grpcio-health-checking==1.85.1"
  "protobuf==7.36.2"
)
source "$ROOT/scripts/venv-lib.sh"
ensure_venv "$VENV" chart-check "${REQS[@]}"

# The runtime step starts a throwaway redis-server on a free loopback port.
if [[ "${CHART_CHECK_SKIP_RUNTIME:-}" != "1" ]] && ! command -v redis-server >/dev/null 2>&1; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "chart-check: installing redis-server (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
      || echo "chart-check: could not install redis-server; the runtime checks will fail" >&2
  fi
fi

# The checks are the Python package scripts/chart_check/ (scripts/chart_check.py is a shim for direct runs);
# no __pycache__ folders left in scripts/.
PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
  exec "$PY" -m chart_check "$@"
