#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need, idempotently:
#   - system packages (redis-server) through apt-get when running as root; otherwise one line
#     saying what to install;
#   - the virtualenv .venv with the project installed (editable) and its test extras;
#   - torch: a CPU wheel found on this machine's disk is installed first, else PyPI's default build;
#   - every package pinned by requirements.lock (pip constraints: no resolver backtracking).
# A stamp keyed by pyproject.toml, requirements.lock and this script makes a second run a no-op.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"

need_system() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: apt-get install ${missing[*]}" >&2
    (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1) || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
  else
    echo "bootstrap: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
}

need_venv() {
  local stamp=".venv/.tributary-stamp" want
  want="$(cat pyproject.toml requirements.lock hack/bootstrap.sh | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/tributary ] && return 0
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  local wheel
  wheel="$(ls ${TORCH_WHEEL_DIRS:-/opt/wheels /root/wheels "$HOME/wheels"} 2>/dev/null | grep -E '^torch-.*\+cpu.*\.whl$' | sort -V | tail -n1 || true)"
  if [ -n "$wheel" ]; then
    for d in ${TORCH_WHEEL_DIRS:-/opt/wheels /root/wheels "$HOME/wheels"}; do
      [ -f "$d/$wheel" ] && { echo "bootstrap: torch from $d/$wheel" >&2; .venv/bin/pip install -q --no-deps "$d/$wheel"; break; }
    done
  fi
  .venv/bin/pip install -q -c requirements.lock -e ".[test]"
  echo "$want" > "$stamp"
}

need_system
need_venv
