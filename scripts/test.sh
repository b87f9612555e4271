#!/usr/bin/env bash
# Runs every check tokend has: formatting, clippy, unit and integration tests
# (real redis-server processes, real sockets, headless Chromium for the login
# app), benchmarks in quick mode, the token exchange interop test (requests and
# PyJWT against a running tokend), the revocation feed consumed from Python
# (grpcio), and the Helm chart validation. Installs what
# the tests need when it is missing (redis-server, chromium and chromium-driver
# from Debian's packages; the interop test and the chart check make their own venvs).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
# The login app's browser tests drive headless Chromium through chromedriver
# (crates/tokend-login/tests/browser.rs); they fail, not skip, without them.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# Debian's package starts a system redis on 6379 under systemd when it can;
# tests never use it (each starts its own on a free port).

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== layering: the crate boundaries hold (docs/architecture.md)"
./scripts/check-layers.sh

echo "== cargo test --workspace"
cargo test --workspace --locked --all-targets

# requests + PyJWT in target/interop-venv (python3-venv installed when missing).
echo "== interop: token exchange from a generic HTTP client, verified by PyJWT"
cargo build --locked --bin tokend
TOKEND_BIN="$PWD/target/debug/tokend" bash scripts/interop.sh

# grpcio + grpcio-tools in the same venv: examples/feed-python against a real tokend.
echo "== revocation feed from Python: grpcio stubs from feed.proto, revocations delivered"
cargo build --locked --bin tokend
TOKEND_BIN="$PWD/target/debug/tokend" bash scripts/feed_python_check.sh

if [ -f scripts/chart-check.sh ]; then
  echo "== Helm chart checks"
  cargo build --locked --bin tokend
  TOKEND_BIN="$PWD/target/debug/tokend" bash scripts/chart-check.sh
fi

echo "== docs: links and runnable blocks"
python3 scripts/docs_check.py links
python3 scripts/docs_check.py run

echo "== container image: the Dockerfile's cargo command on exactly its build context"
python3 scripts/docker-context-check.py

echo "== all checks passed"
