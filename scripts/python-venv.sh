# Sourced by scripts/interop.sh and scripts/feed_python_check.sh: makes (once)
# and reuses target/interop-venv with every Python package those tests use,
# and sets PY to its interpreter. Installs Debian's python3-venv when
# `python3 -m venv` cannot work. Expects ROOT (the repository) to be set.
VENV="$ROOT/target/interop-venv"
REQS=(
  "requests==2.34.2"
  "PyJWT[crypto]==2.15.1"
  "cryptography==50.0.2"
  "grpcio==1.85.1"
  "grpcio-tools==1.85.1"
  "protobuf==7.36.2"
)
STAMP="$VENV/.interop-reqs"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian's python3 has venv but not ensurepip until python3-venv is installed.
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "python-venv: creating $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    echo "python-venv: installing python3-venv (Debian package)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "${REQS[*]}" ]]; then
  echo "python-venv: installing ${REQS[*]}"
  # Three tries: a download cut off mid-file (a flaky network) is not a failed check.
  for try in 1 2 3; do
    if "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --retries 5 "${REQS[@]}"; then
      break
    fi
    if [[ "$try" == 3 ]]; then
      echo "python-venv: pip install failed three times" >&2
      exit 1
    fi
    echo "python-venv: pip install failed (try $try of 3); retrying in 5 s" >&2
    sleep 5
  done
  echo "${REQS[*]}" > "$STAMP"
fi
PY="$VENV/bin/python"
