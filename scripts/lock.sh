#!/usr/bin/env bash
# Regenerate the lock files that pin what the lab recipes install with pip (exact versions + sha256 of every file):
#   recipes/locks/agent.txt       vmlab's own dependencies with the `agent` extra (from pyproject.toml)
#   recipes/locks/jupyterlab.txt  JupyterLab for recipes/jupyterlab.py (its `jupyterlab_spec`)
#   vmlab/operations/locks/uv.txt uv itself, for the pip operations' installer="uv" (`uv==VERSION` in uv.in)
# One universal lock per file (markers for every platform and Python >= 3.10: Debian 12's 3.11, Ubuntu's 3.10/3.12,
# Miniforge's), installed on the VM with `pip install --require-hashes --no-deps`. Needs PyPI; commit the result.
#
#   bash scripts/lock.sh              # newest versions allowed by the specs
#   bash scripts/lock.sh --upgrade-package jupyterlab   # or pass any other `uv pip compile` option
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q uv
compile() {  # $1 output, then inputs and options
  local out=$1; shift
  .venv/bin/uv pip compile --universal --generate-hashes --python-version 3.10 --quiet \
    --custom-compile-command "bash scripts/lock.sh" -o "$out" "$@"
}
compile recipes/locks/agent.txt pyproject.toml --extra agent "$@"
compile recipes/locks/jupyterlab.txt recipes/locks/jupyterlab.in "$@"
compile vmlab/operations/locks/uv.txt vmlab/operations/locks/uv.in "$@"
echo "locks written: recipes/locks/agent.txt recipes/locks/jupyterlab.txt vmlab/operations/locks/uv.txt"
