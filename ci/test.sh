#!/usr/bin/env bash
# The test command: set-up (idempotent), lint, then the whole suite against the real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
python3 -m ruff check .
python3 -m pytest "$@"
