#!/usr/bin/env bash
# Set up the environment, then run the main example: build a circuit and query it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "[quickstart] .venv/bin/python examples/build_and_query.py"
exec .venv/bin/python examples/build_and_query.py
