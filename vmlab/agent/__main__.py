"""`python -m vmlab.agent` runs `vmlab-agent` (handy before the console script is on PATH)."""

from __future__ import annotations

from vmlab.agent.cli import main

main()
