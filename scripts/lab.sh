#!/usr/bin/env bash
# The whole vmlab flow on this machine, no cloud account needed: installs what it needs, builds the local
# Debian base image (once), bakes recipes/lab.py into an image, launches a lab from it and opens a tunnel.
# Ctrl-C closes the tunnel; `.venv/bin/vmlab down lab` removes the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
vmlab_system_packages
vmlab_python_env ""
export VMLAB_PROVIDER=local
.venv/bin/vmlab local init
# conda=false: JupyterLab in a venv, a quick first try under emulation; drop it for Miniforge and the lab
# environment of recipes/environment.yml (a much longer bake without hardware virtualisation)
.venv/bin/vmlab bake recipes/lab.py -e conda=false
.venv/bin/vmlab up lab
exec .venv/bin/vmlab tunnel lab
