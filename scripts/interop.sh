#!/usr/bin/env bash
# Interop test of RFC 8693 token exchange with clients tokend did not write:
# scripts/interop_token_exchange.py requests tokens with plain `requests`
# (form POST, HTTP Basic) and verifies them with PyJWT against the JWKS that
# discovery names: client_credentials, exchange, a second hop with a nested
# `act`, refusals, introspection and revocation of the chain. Then
# scripts/interop_private_key_jwt.py: authlib's PrivateKeyJWT client
# authentication (a client registered by `tokend client new --auth
# private_key_jwt --generate-key`) at the token, introspection and revocation
# endpoints.
#
#   ./scripts/interop.sh                      # RS256, ES256 and EdDSA, one tokend each
#   INTEROP_ALGS=ES256 ./scripts/interop.sh   # one algorithm
#   TOKEND_BIN=target/release/tokend ./scripts/interop.sh
#
# Builds target/debug/tokend when it is missing (pass TOKEND_BIN otherwise),
# keeps its Python tools in target/interop-venv (created once, reused;
# installs Debian's python3-venv when `python3 -m venv` cannot work), and
# starts each tokend on free loopback ports with a generated key, secrets and
# config in a temporary folder; tokend is stopped and the folder removed on
# exit, whatever happens. Exit 0 only if every check passed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ALGS=${INTEROP_ALGS:-RS256 ES256 EdDSA}
TOKEND_BIN=${TOKEND_BIN:-$ROOT/target/debug/tokend}

# target/interop-venv with requests, PyJWT (and grpcio for the feed check); sets PY.
source "$ROOT/scripts/python-venv.sh"

if [[ ! -x "$TOKEND_BIN" ]]; then
  echo "interop: building tokend"
  cargo build --locked -p tokend --bin tokend
  TOKEND_BIN="$ROOT/target/debug/tokend"
fi

# shellcheck source=scripts/tokend-harness.sh
source "$ROOT/scripts/tokend-harness.sh"

# Secrets of the clients, for the config (hashed) and the Python side.
CLIENTS=(portal gateway orders resource-server)
declare -A HASH
for c in "${CLIENTS[@]}"; do
  s=$(new_secret)
  export "INTEROP_SECRET_$(echo "$c" | tr 'a-z-' 'A-Z_')=$s"
  HASH[$c]=$(hash_secret "$s")
done

# Writes the config for algorithm $1, HTTP port $2, gRPC port $3.
write_config() {
  cat > "$WORK/tokend.toml" <<EOF
issuer = "http://127.0.0.1:$2"

[http]
listen = "127.0.0.1:$2"

[grpc]
listen = "127.0.0.1:$3"

[store]
url = "memory://"

[signing]
algorithm = "$1"
key_file = "$WORK/signing.pem"

[log]
level = "warn"

[server]
shutdown_grace_secs = 2

# The subject: a client_credentials token addressed to the gateway.
[[clients]]
client_id = "portal"
secret_hashes = ["${HASH[portal]}"]
grant_types = ["client_credentials"]
scopes = ["orders:read", "orders:write", "billing:read"]
audience = ["gateway"]
claims = { organisation_id = 74, roles = ["ADMIN"] }

# Receives tokens addressed to "gateway", exchanges them for orders-api.
[[clients]]
client_id = "gateway"
secret_hashes = ["${HASH[gateway]}"]
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["orders:read", "orders:write", "billing:read"]
audience = ["gateway"]
token_exchange_audiences = ["orders-api"]
token_exchange_claims = ["organisation_id"]

# Receives tokens addressed to "orders-api", exchanges them for billing-api.
[[clients]]
client_id = "orders"
secret_hashes = ["${HASH[orders]}"]
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["orders:read", "billing:read"]
audience = ["orders-api"]
token_exchange_audiences = ["billing-api"]

[[clients]]
client_id = "resource-server"
secret_hashes = ["${HASH[resource-server]}"]
grant_types = ["client_credentials"]
introspection = "any"

EOF
  # The block `tokend client new` printed (a private_key_jwt client), as is.
  cat "$WORK/partner-block.toml" >> "$WORK/tokend.toml"
  echo 'introspection = "own"' >> "$WORK/tokend.toml"
}

# Starts tokend for algorithm $1 on free ports; sets TOKEND_PID and
# INTEROP_BASE_URL. A port taken between choosing and binding it makes
# tokend exit at start-up: then it tries other ports.
start_tokend() {
  local alg=$1 attempt http grpc
  rm -f "$WORK/signing.pem"
  "$TOKEND_BIN" keygen --alg "$alg" --out "$WORK/signing.pem" >/dev/null || return 1
  # A private_key_jwt client registered the way the docs say, and a key of
  # the same algorithm that nobody registered.
  rm -f "$WORK/partner.pem" "$WORK/stranger.pem"
  "$TOKEND_BIN" client new --id partner-jwt --auth private_key_jwt --generate-key "$alg" \
    --private-key-out "$WORK/partner.pem" > "$WORK/partner-block.toml" || return 1
  "$TOKEND_BIN" keygen --alg "$alg" --out "$WORK/stranger.pem" >/dev/null || return 1
  for attempt in 1 2 3; do
    http=$(free_port)
    grpc=$(free_port)
    write_config "$alg" "$http" "$grpc"
    "$TOKEND_BIN" check-config --config "$WORK/tokend.toml" >/dev/null || return 1
    env -u RUST_LOG "$TOKEND_BIN" serve --config "$WORK/tokend.toml" >"$WORK/tokend.log" 2>&1 &
    TOKEND_PID=$!
    export INTEROP_BASE_URL="http://127.0.0.1:$http"
    for _ in $(seq 200); do
      if ! kill -0 "$TOKEND_PID" 2>/dev/null; then
        break
      fi
      if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
          "$INTEROP_BASE_URL/readyz" 2>/dev/null; then
        echo "interop: tokend ($alg) ready on $INTEROP_BASE_URL (pid $TOKEND_PID)"
        return 0
      fi
      sleep 0.1
    done
    echo "interop: tokend did not become ready (attempt $attempt); its log:" >&2
    sed 's/^/  [tokend] /' "$WORK/tokend.log" >&2
    stop_tokend
  done
  return 1
}

failed=()
for alg in $ALGS; do
  echo "== interop: token exchange, $alg"
  if ! start_tokend "$alg"; then
    failed+=("$alg")
    continue
  fi
  ok=1
  INTEROP_ALG="$alg" PYTHONDONTWRITEBYTECODE=1 "$PY" scripts/interop_token_exchange.py || ok=0
  echo "== interop: private_key_jwt with authlib, $alg"
  INTEROP_PKJWT_ID=partner-jwt INTEROP_PKJWT_ALG="$alg" INTEROP_PKJWT_KEY="$WORK/partner.pem" \
    INTEROP_PKJWT_OTHER="$WORK/stranger.pem" PYTHONDONTWRITEBYTECODE=1 \
    "$PY" scripts/interop_private_key_jwt.py || ok=0
  if [[ $ok == 0 ]]; then
    failed+=("$alg")
    echo "interop: tokend's log:"
    sed 's/^/  [tokend] /' "$WORK/tokend.log"
  fi
  stop_tokend
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "interop: FAILED for ${failed[*]}"
  exit 1
fi
echo "interop: all checks passed ($ALGS)"
