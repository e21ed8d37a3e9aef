#!/usr/bin/env bash
# Create .venv (if missing) and install spnpolicy in editable mode with the dev, mpe and
# lbf extras, every package pinned by requirements/constraints.txt. Safe to run again:
# when pyproject.toml and the constraints are unchanged since the last successful
# install, it only checks that the package imports.
#
# Environment: PYTHON (interpreter used to create .venv, default python3),
# SPNPOLICY_FORCE_SETUP=1 (reinstall even if nothing changed), SPNPOLICY_EXTRAS (more
# extras of pyproject.toml to install, comma-separated, e.g. SPNPOLICY_EXTRAS=vmas).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
trap 'echo "[setup] FAILED (line $LINENO): see the messages above" >&2' ERR

python=${PYTHON:-python3}
venv=.venv
constraints=requirements/constraints.txt
extras="dev,mpe,lbf${SPNPOLICY_EXTRAS:+,$SPNPOLICY_EXTRAS}"
stamp=$venv/.spnpolicy-setup
# Asks the installed distribution (not the source tree, which imports from the repo root).
check='import importlib.metadata as m, torch
v = m.version("spnpolicy")
print(f"[setup] ok: spnpolicy {v}, torch {torch.__version__}")'

if [[ ! -x $venv/bin/python ]]; then
    if ! command -v "$python" >/dev/null; then
        echo "[setup] FAILED: no '$python' on PATH; set PYTHON=/path/to/python3.10+" >&2
        exit 1
    fi
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        echo "[setup] FAILED: spnpolicy needs Python >= 3.10, '$python' is $("$python" --version 2>&1)" >&2
        exit 1
    }
    echo "[setup] creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi

more=${SPNPOLICY_EXTRAS:+extras=$SPNPOLICY_EXTRAS}   # the stamp records them too
want=$({ cat pyproject.toml "$constraints"; printf '%s' "$more"; } | "$venv/bin/python" -c \
    'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [[ ${SPNPOLICY_FORCE_SETUP:-0} != 1 && -f $stamp && $(cat "$stamp") == "$want" ]] \
    && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "[setup] $venv is up to date (pyproject.toml and $constraints unchanged)"
    exit 0
fi

echo "[setup] installing spnpolicy[$extras] into $venv (pinned by $constraints)"
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$constraints" -e ".[$extras]"
"$venv/bin/python" -c "$check"
echo "$want" > "$stamp"
