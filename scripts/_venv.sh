# Sourced by scripts/up and scripts/test: create or reuse .venv and install gpuq into it.
# Usage: ensure_venv [EXTRAS]   (e.g. ensure_venv test)
# Re-installs only when pyproject.toml changed since the last install, so repeat runs are quick.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUQ_VENV:-$ROOT/.venv}"

ensure_venv() {
  local extras="${1:-}"
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "gpuq needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    return 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
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
}
