#!/usr/bin/env bash
# Set up the environment, then run the main example: a small coverage benchmark (2 agents on
# 4x4, spn-ac beside six baselines, 3 seeds each, 2 worker processes), which prints the
# results table and the paths of its plots. Extra arguments go to `spnpolicy bench`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "[quickstart] .venv/bin/python -m spnpolicy.cli bench coverage-quick-small --workers 2 $*"
exec .venv/bin/python -m spnpolicy.cli bench coverage-quick-small --workers 2 "$@"
