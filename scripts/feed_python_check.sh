#!/usr/bin/env bash
# The revocation feed consumed from Python, for real: starts a tokend (memory
# store, 1 s heartbeats, admin listener) and runs scripts/feed_python_check.py,
# which drives examples/feed-python/watch_revocations.py (grpcio, stubs
# generated from proto/tokend/v1/feed.proto at run time) against it: a token
# revoked before watching arrives in the snapshot, one revoked at /oauth/revoke
# while watching and a client disabled and enabled over the admin API arrive
# live, a stream silenced with SIGSTOP is dropped and resumed from its cursor,
# and the example's own command line prints a revocation. Each wait is a poll
# with a generous deadline; a feed that does not deliver fails the check.
#
#   ./scripts/feed_python_check.sh
#   TOKEND_BIN=target/release/tokend ./scripts/feed_python_check.sh
#
# Python packages: target/interop-venv (scripts/python-venv.sh). Builds
# target/debug/tokend when it is missing. tokend is stopped and its temporary
# folder removed on exit, whatever happens. Exit 0 only if every check passed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOKEND_BIN=${TOKEND_BIN:-$ROOT/target/debug/tokend}

# target/interop-venv with grpcio, grpcio-tools, PyJWT, requests; sets PY.
source "$ROOT/scripts/python-venv.sh"

if [[ ! -x "$TOKEND_BIN" ]]; then
  echo "feed-python: building tokend"
  cargo build --locked -p tokend --bin tokend
  TOKEND_BIN="$ROOT/target/debug/tokend"
fi
export TOKEND_BIN

# shellcheck source=scripts/tokend-harness.sh
source "$ROOT/scripts/tokend-harness.sh"

# Secrets, for the config (hashed) and the Python side (FEED_SECRET_<ID>).
declare -A HASH
for c in watcher orders-service partner admin; do
  s=$(new_secret)
  export "FEED_SECRET_$(echo "$c" | tr 'a-z-' 'A-Z_')=$s"
  HASH[$c]=$(hash_secret "$s")
done
"$TOKEND_BIN" keygen --alg ES256 --out "$WORK/signing.pem" >/dev/null

# Writes the config for HTTP port $1, gRPC port $2, admin port $3.
write_config() {
  cat > "$WORK/tokend.toml" <<CONF
issuer = "http://127.0.0.1:$1"

[http]
listen = "127.0.0.1:$1"

[grpc]
listen = "127.0.0.1:$2"

[admin]
listen = "127.0.0.1:$3"
token_hash = "${HASH[admin]}"

[store]
url = "memory://"

[signing]
algorithm = "ES256"
key_file = "$WORK/signing.pem"

[log]
level = "warn"

[server]
shutdown_grace_secs = 2

[revocation_feed]
heartbeat_secs = 1

# The Python watcher: may watch the revocation feed.
[[clients]]
client_id = "watcher"
secret_hashes = ["${HASH[watcher]}"]
grant_types = ["client_credentials"]
revocation_feed = true

# Calls orders-api; its tokens get revoked one by one.
[[clients]]
client_id = "orders-service"
secret_hashes = ["${HASH[orders-service]}"]
grant_types = ["client_credentials"]
scopes = ["orders:read"]
audience = ["orders-api"]

# Gets disabled (and enabled again) over the admin API.
[[clients]]
client_id = "partner"
secret_hashes = ["${HASH[partner]}"]
grant_types = ["client_credentials"]
scopes = ["orders:read"]
audience = ["orders-api"]
CONF
}

# Starts tokend on free ports (other ports when one was taken meanwhile).
start_tokend() {
  local attempt http grpc admin
  for attempt in 1 2 3; do
    http=$(free_port); grpc=$(free_port); admin=$(free_port)
    write_config "$http" "$grpc" "$admin"
    "$TOKEND_BIN" check-config --config "$WORK/tokend.toml" >/dev/null || return 1
    env -u RUST_LOG "$TOKEND_BIN" serve --config "$WORK/tokend.toml" >"$WORK/tokend.log" 2>&1 &
    TOKEND_PID=$!
    export FEED_BASE_URL="http://127.0.0.1:$http" FEED_GRPC="127.0.0.1:$grpc" \
      FEED_TOKEND_PID="$TOKEND_PID" TOKEND_ADMIN_ADDR="127.0.0.1:$admin" \
      TOKEND_ADMIN_TOKEN="$FEED_SECRET_ADMIN"
    for _ in $(seq 200); do
      kill -0 "$TOKEND_PID" 2>/dev/null || break
      if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
          "$FEED_BASE_URL/readyz" 2>/dev/null; then
        echo "feed-python: tokend ready on $FEED_BASE_URL, gRPC $FEED_GRPC (pid $TOKEND_PID)"
        return 0
      fi
      sleep 0.1
    done
    echo "feed-python: tokend did not become ready (attempt $attempt); its log:" >&2
    sed 's/^/  [tokend] /' "$WORK/tokend.log" >&2
    stop_tokend
  done
  return 1
}

echo "== feed-python: the revocation feed from grpcio"
start_tokend
if ! FEED_STUBS_DIR="$WORK/stubs" PYTHONDONTWRITEBYTECODE=1 "$PY" scripts/feed_python_check.py; then
  echo "feed-python: tokend's log:"
  sed 's/^/  [tokend] /' "$WORK/tokend.log"
  echo "feed-python: FAILED"
  exit 1
fi
echo "feed-python: all checks passed"
