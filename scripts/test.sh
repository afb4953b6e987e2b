#!/usr/bin/env bash
# Run vmlab's test suite on a fresh Debian/Ubuntu machine: installs what the tests need, lints, type-checks,
# then runs pytest (arguments are passed on, e.g. `-m "not vm"` to leave out the QEMU end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
vmlab_test_packages
vmlab_python_env "[test]"
vmlab_test_tools
.venv/bin/ruff check vmlab tests harness bench recipes
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
