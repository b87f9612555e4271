# Sourced by scripts/interop.sh and scripts/feed_python_check.sh: makes (once)
# and reuses target/interop-venv with every Python package those tests use,
# and sets PY to its interpreter (scripts/venv-lib.sh). Expects ROOT (the
# repository) to be set.
VENV="$ROOT/target/interop-venv"
REQS=(
  "requests==2.34.2"
  "PyJWT[crypto]==2.15.1"
  "cryptography==50.0.2"
  "grpcio==1.85.1"
  "grpcio-tools==1.85.1"
  "protobuf==7.36.2"
  "authlib==1.9.10"
)
source "$ROOT/scripts/venv-lib.sh"
ensure_venv "$VENV" python-venv "${REQS[@]}"
