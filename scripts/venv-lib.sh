# Sourced by scripts/python-venv.sh and scripts/chart-check.sh. Defines
#   ensure_venv <venv dir> <label> <pinned package>...
# which makes the venv once (installing Debian's python3-venv when
# `python3 -m venv` cannot work), installs the pinned packages when the list
# changed since the last install (a stamp file in the venv), and sets PY to
# the venv's interpreter.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_venv() {
  local venv="$1" label="$2"
  shift 2
  local stamp="$venv/.pinned-reqs"
  # Debian's python3 has venv but not ensurepip until python3-venv is installed.
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "$label: creating $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      echo "$label: installing python3-venv (Debian package)"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
  fi
  if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$*" ]]; then
    echo "$label: installing $*"
    # Three tries: a download cut off mid-file (a flaky network) is not a failed check.
    local try
    for try in 1 2 3; do
      if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --retries 5 "$@"; then
        break
      fi
      if [[ "$try" == 3 ]]; then
        echo "$label: pip install failed three times" >&2
        exit 1
      fi
      echo "$label: pip install failed (try $try of 3); retrying in 5 s" >&2
      sleep 5
    done
    echo "$*" > "$stamp"
  fi
  PY="$venv/bin/python"
}
