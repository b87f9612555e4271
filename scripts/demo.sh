#!/usr/bin/env bash
# The whole authorization-code flow on one machine: builds once, then starts
#   tokend           examples/tokend.toml   HTTP 127.0.0.1:8080, gRPC 127.0.0.1:50051
#   the login app    examples/login.toml    http://127.0.0.1:9000/login (users: examples/users.toml)
#   the demo client  demo-spa               http://127.0.0.1:9999/
# and prints the URL to open. Ctrl-C (or the end of this script) stops all three.
# Needs only the Rust toolchain and a C compiler (the quick start's).
#   DEMO_EXIT_AFTER_START=1 scripts/demo.sh   starts, checks the three answer, and stops (a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tokend --bin tokend -p tokend-login --bin tokend-login

# The demo login app's bearer secret: examples/tokend.toml holds its SHA-256
# (login_app_token_hash). Handed over in the environment, never on a command line.
export TOKEND_LOGIN_APP_TOKEN=demo-login-app-secret

pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

# Waits until something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp: no curl needed).
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: nothing answers on 127.0.0.1:$1" >&2
  return 1
}

./target/release/tokend serve --config examples/tokend.toml & pids+=($!)
wait_port 8080
wait_port 50051
./target/release/tokend-login serve --config examples/login.toml & pids+=($!)
./target/release/tokend-login demo-client --listen 127.0.0.1:9999 --tokend-url http://127.0.0.1:8080 & pids+=($!)
wait_port 9000
wait_port 9999

cat <<'MSG'

  tokend, the login app and the demo client are running.
  Open http://127.0.0.1:9999/ and sign in as  demo / demo-password
  (Ctrl-C stops all three.)

MSG
if [[ "${DEMO_EXIT_AFTER_START:-}" == 1 ]]; then
  exit 0
fi
wait
