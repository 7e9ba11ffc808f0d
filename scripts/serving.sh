#!/usr/bin/env bash
# Thin wrapper: `flywheel bench serving` through the project's virtual environment.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
exec "$here/.venv/bin/flywheel" bench serving "$@"
