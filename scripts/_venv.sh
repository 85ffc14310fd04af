# Sourced by scripts/up and scripts/test: create or reuse .venv and install gpuq into it.
# Usage: ensure_venv [EXTRAS]   (e.g. ensure_venv server,test: the server, and the tools the tests use)
# Re-installs only when pyproject.toml changed since the last install, so repeat runs are quick.
#
# Jobs' Python: a Ray job's `python` is this venv's interpreter (the cluster's own Ray),
# run as the job's user. So, run as root (a multi-user install), the venv is built from a
# Python every account may run: not pyenv's under /root (mode 0700), but the first of
# python3, python3.12, python3.11 on PATH or in /usr/bin that every account can reach.
# A venv built from one they cannot is rebuilt. PYTHON=/path/to/python3.11 chooses.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUQ_VENV:-$ROOT/.venv}"

# Whether every account may run $1: it and every folder above it (both the link's and
# the target's) are open to others.
runnable_by_all() {
  local p
  for p in "$(realpath -s "$1")" "$(realpath "$1")"; do
    [ -n "$(find "$p" -maxdepth 0 -perm -o=x 2>/dev/null)" ] || return 1
    while p="$(dirname "$p")"; [ "$p" != "/" ]; do
      [ -n "$(find "$p" -maxdepth 0 -perm -o=x 2>/dev/null)" ] || return 1
    done
  done
}

new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

choose_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local c p
  if [ "$(id -u)" -eq 0 ] && [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null \
      && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's python3-venv (the venv is built from /usr/bin/python3)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && \
           DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >/dev/null 2>&1; } \
      || echo "could not install python3-venv" >&2
  fi
  if [ "$(id -u)" -eq 0 ]; then
    for c in python3 python3.12 python3.11 /usr/bin/python3 /usr/bin/python3.12 /usr/bin/python3.11; do
      p="$(command -v "$c" 2>/dev/null)" || continue
      if new_enough "$p" && runnable_by_all "$p" && "$p" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "$p"; return
      fi
    done
  fi
  echo python3
}

ensure_venv() {
  local extras="${1:-}"
  local python
  python="$(choose_python)"
  if ! new_enough "$python"; then
    echo "gpuq needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    return 1
  fi
  if [ -x "$VENV/bin/python" ] && [ "$(id -u)" -eq 0 ] && [ -z "${PYTHON:-}" ] \
      && ! runnable_by_all "$VENV/bin/python" && runnable_by_all "$python"; then
    echo "== rebuilding $VENV from $python: its Python ($(realpath "$VENV/bin/python")) is one other accounts cannot run," \
         "and Ray jobs run it as their user"
    rm -rf "$VENV"
  fi
  umask 022  # the venv is read by every job's user
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV from $python ($("$python" --version 2>&1))"
    "$python" -m venv "$VENV" || return 1
  fi
  local target=".${extras:+[$extras]}"
  local stamp="$VENV/.gpuq-install-stamp"
  local want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) $target"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing gpuq${extras:+ with [$extras] extras} into $VENV (first run takes about a minute)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip || return 1
    (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet -e "$target") || return 1
    echo "$want" > "$stamp"
  fi
  if [ "$(id -u)" -eq 0 ] && ! runnable_by_all "$VENV/bin/python"; then
    echo "note: other accounts cannot run $VENV/bin/python ($(realpath "$VENV/bin/python")): Ray jobs (--ray) are" \
         "refused until job_python names a Python they can run, or PYTHON=/usr/bin/python3.11 rebuilds the venv" >&2
  fi
}
