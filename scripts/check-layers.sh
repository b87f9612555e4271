#!/usr/bin/env bash
# Checks the workspace's layering (docs/architecture.md) from cargo's own view of the
# dependency graph, so a new dependency that breaks a layer fails CI:
#   - tokend-core (the OAuth rules and the store) depends on no transport or CLI crate;
#   - tokend-token (keys, JWTs) depends on none of ours and does no network I/O;
#   - tokend-login (the reference login app) depends on no tokend crate: it knows tokend only
#     through the public gRPC contract (its own build.rs compiles the proto) and HTTP.
#     Its tests may start a tokend in-process (a dev-dependency; -e normal leaves those out).
#   - tokend-verify (the resource-server library) depends on tokend-token only: never on the
#     store (tokend-core), the server (tokend) or the tools; tokend is known through the JWKS
#     and the RevocationFeed proto its own build.rs compiles (tests start a tokend in-process).
set -euo pipefail
cd "$(dirname "$0")/.."

deps() { cargo tree --locked -p "$1" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u; }
fail=0
forbid() {
  local crate=$1; shift
  local found
  found=$(deps "$crate" | grep -Fxf <(printf '%s\n' "$@") || true)
  if [[ -n "$found" ]]; then
    echo "check-layers: $crate must not depend on: $(echo $found)" >&2
    fail=1
  fi
}
forbid tokend-core tonic tonic-health tonic-reflection axum hyper hyper-util tower tower-http clap tokend
forbid tokend-token tokend tokend-core tokio redis tonic axum hyper clap
forbid tokend-login tokend tokend-core tokend-token tokend-bench
forbid tokend-verify tokend tokend-core tokend-login tokend-bench redis
if [[ $fail == 0 ]]; then
  echo "check-layers: ok (tokend-core: no transport or CLI crate; tokend-token: none of ours, no I/O runtime; tokend-login: no tokend crate; tokend-verify: tokend-token only)"
fi
exit $fail
