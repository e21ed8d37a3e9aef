#!/usr/bin/env bash
# Set up the environment, then run the test suite on 2 cores (slow tests are deselected by
# pyproject.toml; run them with `bash scripts/test.sh -m slow`). Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "[test] .venv/bin/python -m pytest -n 2 tests${*:+ $*}"
exec .venv/bin/python -m pytest -n 2 tests "$@"
