#!/usr/bin/env bash
# Set up the environment, then run the main example: the lift task with a miscoordination
# penalty (spn-ac beside five baselines, 3 seeds each, 2 worker processes), which prints the
# results table and the paths of its plots. Extra arguments go to `spnpolicy bench`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "[quickstart] .venv/bin/python -m spnpolicy.cli bench coordination-quick --workers 2 $*"
exec .venv/bin/python -m spnpolicy.cli bench coordination-quick --workers 2 "$@"
