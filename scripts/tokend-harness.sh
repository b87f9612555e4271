# Shared by scripts/interop.sh and scripts/feed_python_check.sh (sourced):
# a work folder removed on exit, a tokend to stop on exit (TOKEND_PID), and
# small helpers. Needs $PY (scripts/python-venv.sh) and $TOKEND_BIN.

WORK=$(mktemp -d)
TOKEND_PID=""
stop_tokend() {
  if [[ -n "$TOKEND_PID" ]]; then
    kill -CONT "$TOKEND_PID" 2>/dev/null || true   # in case a check stopped it
    kill -TERM "$TOKEND_PID" 2>/dev/null || true
    wait "$TOKEND_PID" 2>/dev/null || true
    TOKEND_PID=""
  fi
}
cleanup() {
  stop_tokend
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
new_secret() {
  "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))'
}
hash_secret() {
  printf %s "$1" | "$TOKEND_BIN" hash-secret
}
