#!/usr/bin/env bash
# One entry point for people and CI.
#   ./run.sh            set up (venv + install + migrate) and start the service on 127.0.0.1:8000
#   ./run.sh test       set up, check the layer contracts and run the whole test suite (SQLite and PostgreSQL)
#   ./run.sh setup      only create/refresh the virtual environment
# Extra arguments go to `flywheel serve` or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV="${FLYWHEEL_VENV:-.venv}"

setup() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.flywheel-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing Flywheel and its dependencies ($extras)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and pinned, so no resolver step can pull a different (multi-GB CUDA) build.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
  fi
}

cmd="${1:-serve}"
case "$cmd" in
  serve)
    shift || true
    setup report
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    "$VENV/bin/flywheel" migrate
    exec "$VENV/bin/flywheel" serve "$@"
    ;;
  test)
    shift || true
    setup test,report
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    echo "==> checking the layer contracts (lint-imports)"
    "$VENV/bin/lint-imports" --no-cache
    echo "==> linting (ruff)"
    "$VENV/bin/ruff" check --quiet .
    echo "==> type checking (mypy: app/, strict on the core packages)"
    "$VENV/bin/mypy" app
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "pytest collected no tests: that is a failure here" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  setup)
    setup test,report
    ;;
  *)
    echo "usage: $0 [serve|test|setup] [args...]" >&2
    exit 2
    ;;
esac
